"""Pictures as PNG files: prior samples, reconstructions, training curves.

Image grids go through torchvision's ``make_grid``/``save_image``; charts through matplotlib's
Agg backend (no display needed). Every PNG is written atomically
(:func:`pyro_vae.runs.atomic_write`): a failed write leaves no half picture and is one
:class:`~pyro_vae.errors.RunFolderError` naming the file and the reason.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from pyro_vae.models.base import LatentModel  # noqa: E402
from pyro_vae.runs import atomic_write  # noqa: E402


def is_image(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and shape[0] in (1, 3)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, min_side: int = 56) -> Path:
    """Save ``images`` (``(n, C, H, W)``, values in [0, 1]) as a PNG grid of ``nrow`` a row,
    upscaled (nearest, by a whole factor) toward ``min_side`` pixels a side so
    that small images stay readable."""
    images = images.detach().cpu().clamp(0, 1)
    factor = max(1, min_side // images.shape[-1])
    if factor > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    path = Path(path)
    png = io.BytesIO()
    save_image(images, png, format="png", nrow=nrow, padding=2, pad_value=1)
    atomic_write(path, png.getvalue())
    return path


def save_figure(fig, path: str | Path, **savefig) -> Path:
    """Save a matplotlib figure as a PNG (folders made as needed) and close it; ``savefig``:
    options of ``Figure.savefig`` (default ``dpi=120, bbox_inches="tight"``)."""
    path = Path(path)
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", **({"dpi": 120, "bbox_inches": "tight"} | savefig))
    finally:
        plt.close(fig)
    atomic_write(path, png.getvalue())
    return path


@torch.no_grad()
def save_samples(model: LatentModel, path: str | Path, num: int = 64,
                 reference: torch.Tensor | None = None) -> Path:
    """Likelihood means at ``num`` prior draws z ~ p(z): a grid for images, else a scatter of
    the first two coordinates over ``reference`` data."""
    model.eval()
    samples = model.sample(num).cpu()
    path = Path(path)
    if is_image(model.data_shape):
        return save_grid(samples, path, nrow=max(1, round(num**0.5)))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if reference is not None:
        r = reference.cpu()
        ax.scatter(r[:, 0], r[:, 1], s=6, alpha=0.4, label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=6, alpha=0.6, label="model: E[x | z], z ~ p(z)")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.legend()
    return save_figure(fig, path)


@torch.no_grad()
def save_reconstructions(model: LatentModel, x: torch.Tensor, path: str | Path,
                         num: int = 32, per_row: int = 16,
                         y: torch.Tensor | None = None) -> Path | None:
    """Inputs (odd rows) above their reconstructions (even rows), ``num`` of them spread
    evenly over ``x`` (test sets are often sorted by label). Images only. ``y``: the labels
    of ``x``, for conditional models."""
    if not is_image(model.data_shape):
        return None
    model.eval()
    idx = torch.linspace(0, len(x) - 1, min(num, len(x))).long().to(x.device)
    x = x[idx]
    recon = model.reconstruct(x, None if y is None else y[idx])
    rows = []
    for start in range(0, len(x), per_row):
        rows += [x[start:start + per_row].cpu(), recon[start:start + per_row].cpu()]
    return save_grid(torch.cat(rows), path, nrow=per_row)


def save_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Train and test ELBO per epoch (nats per data point)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_elbo"] for h in history], label="train objective")
    ax.plot(epochs, [h["test_elbo"] for h in history], label="test ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per data point")
    lo = min(min(h["train_elbo"], h["test_elbo"]) for h in history[len(history) // 10:])
    hi = max(max(h["train_elbo"], h["test_elbo"]) for h in history)
    ax.set_ylim(lo - 0.05 * (hi - lo + 1), hi + 0.05 * (hi - lo + 1))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def save_run_pictures(model: LatentModel, data, folder: str | Path,
                      history: list[dict] | None = None) -> None:
    """The pictures of a run folder: ``samples.png``, ``reconstructions.png``, ``curves.png``."""
    folder = Path(folder)
    save_samples(model, folder / "samples.png", reference=data.test_x)
    save_reconstructions(model, data.test_x, folder / "reconstructions.png",
                         y=data.test_y if model.is_conditional else None)
    if getattr(model, "num_classes", None):
        save_class_grid(model, folder / "class_samples.png")
    if history:
        save_curves(history, folder / "curves.png", title=f"{model.name} on {data.name}")


def grid_image(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A (3, H, W) grid of images, for notebooks."""
    return make_grid(images.cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=1)


@torch.no_grad()
def save_class_grid(model: LatentModel, path: str | Path, per_class: int = 10) -> Path:
    """Class-conditional samples of a conditional model: row c holds ``per_class`` images drawn
    with label c (``model.sample(n, y)``), one row per class."""
    model.eval()
    labels = torch.arange(model.num_classes, device=model.device).repeat_interleave(per_class)
    return save_grid(model.sample(len(labels), labels), path, nrow=per_class)


@torch.no_grad()
def save_label_samples(model: LatentModel, path: str | Path, label: int,
                       num: int = 64) -> Path:
    """``num`` samples of one class ``label`` from a conditional model, as a grid."""
    model.eval()
    labels = torch.full((num,), label, dtype=torch.long, device=model.device)
    return save_grid(model.sample(num, labels), path, nrow=max(1, round(num**0.5)))
