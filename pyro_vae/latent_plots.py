"""Pictures of what the latents learned: interpolations, traversals, the 2-D latent map.

They work for any model/guide pair. A data point's code is the guide's mean of every latent
site, concatenated (:func:`pyro_vae.evaluate.latent_means`); a code is decoded by running the
model conditioned on it (``poutine.condition``) and taking the mean of the observed site's
distribution, so no model needs a ``decode`` method.

* interpolation: codes on the straight line between the codes of two test images, decoded;
* traversal: one code, one dimension varied over its 2%-98% range on the test set, the rest
  kept; one row per dimension, the most used dimensions (largest variance of the posterior
  mean) first;
* latent map: the test set's codes, coloured by label (or a known factor), on the two
  coordinates for 2-D latents, else on the first two principal directions.
"""

from __future__ import annotations

from pathlib import Path

import pyro
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import latent_means
from pyro_vae.models.base import LatentModel
from pyro_vae.plots import is_image, plt, save_figure, save_grid

KINDS = ("interpolation", "traversal", "latent-map")


def _site_sizes(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None):
    trace = poutine.trace(model.guide).get_trace(x[:1], None if y is None else y[:1])
    return [(name, tuple(s["value"].shape[1:])) for name, s in trace.nodes.items()
            if s["type"] == "sample" and name in model.latent_sites]


@torch.no_grad()
def decode_codes(model: LatentModel, codes: torch.Tensor, like: torch.Tensor,
                 y: torch.Tensor | None = None) -> torch.Tensor:
    """The observed site's mean under the model with its latent sites set to ``codes``
    (``(n, D)``, concatenated in the guide's site order); ``like`` is one data point's
    shape/device reference."""
    model.eval()
    n = codes.shape[0]
    data, start = {}, 0
    for name, shape in _site_sizes(model, like, y):
        size = int(torch.Size(shape).numel())
        data[name] = codes[:, start:start + size].reshape(n, *shape)
        start += size
    dummy = like[:1].expand(n, *like.shape[1:]).contiguous()
    yy = None if y is None else y[:1].expand(n, *y.shape[1:])
    with pyro.poutine.block():
        trace = poutine.trace(poutine.condition(model.model, data=data)).get_trace(dummy, yy)
    return trace.nodes[model.observed_site]["fn"].mean


def _need_images(model: LatentModel, what: str) -> None:
    if not is_image(model.data_shape):
        raise ConfigError(f"the {what} picture needs image data; model {model.name} was "
                          f"trained on points of shape {model.data_shape}")


@torch.no_grad()
def save_interpolation(model: LatentModel, x: torch.Tensor, path: str | Path,
                       num_pairs: int = 6, steps: int = 10,
                       y: torch.Tensor | None = None) -> Path:
    """Rows of: image a, ``steps`` decoded codes from code(a) to code(b), image b; the pairs
    are spread over ``x`` (first half against second half)."""
    _need_images(model, "interpolation")
    n = x.shape[0]
    idx = torch.linspace(0, n // 2 - 1, num_pairs).long().to(x.device)
    a, b = x[idx], x[idx + n // 2]
    ya, yb = (None, None) if y is None else (y[idx], y[idx + n // 2])
    za, zb = latent_means(model, a, ya), latent_means(model, b, yb)
    t = torch.linspace(0, 1, steps, device=x.device)[:, None]
    rows = []
    for i in range(len(idx)):
        codes = (1 - t) * za[i] + t * zb[i]
        yi = None if ya is None else ya[i:i + 1]  # a conditional model decodes with a's label
        rows += [a[i:i + 1].cpu(), decode_codes(model, codes, x, yi).cpu(), b[i:i + 1].cpu()]
    return save_grid(torch.cat(rows), path, nrow=steps + 2, min_side=64)


@torch.no_grad()
def traversal_order(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None):
    """Latent dimensions by decreasing variance of the posterior mean over ``x``, with the
    codes."""
    codes = latent_means(model, x, y)
    return torch.argsort(codes.var(0), descending=True), codes


@torch.no_grad()
def save_traversal(model: LatentModel, x: torch.Tensor, path: str | Path,
                   max_dims: int = 10, steps: int = 9, index: int = 0,
                   y: torch.Tensor | None = None) -> Path:
    """One row per latent dimension (most used first): the code of ``x[index]`` with that
    dimension set to ``steps`` values across its 2%-98% range over ``x``."""
    _need_images(model, "traversal")
    order, codes = traversal_order(model, x, y)
    base = codes[index]
    rows = []
    for d in order[:max_dims].tolist():
        lo, hi = torch.quantile(codes[:, d], torch.tensor([0.02, 0.98], device=codes.device))
        grid = base.expand(steps, -1).clone()
        grid[:, d] = torch.linspace(lo.item(), hi.item(), steps, device=codes.device)
        rows.append(decode_codes(model, grid, x, None if y is None else y[index:index + 1]).cpu())
    return save_grid(torch.cat(rows), path, nrow=steps, min_side=64)


@torch.no_grad()
def save_latent_map(model: LatentModel, x: torch.Tensor, labels: torch.Tensor | None,
                    path: str | Path, label_name: str = "label",
                    y: torch.Tensor | None = None) -> Path:
    """The codes of ``x`` in 2-D (the latents themselves, or their first two principal
    directions), coloured by ``labels``."""
    codes = latent_means(model, x, y).cpu().double()
    if codes.shape[1] < 2:
        raise ConfigError("the latent map needs at least 2 latent dimensions")
    if codes.shape[1] == 2:
        xy, axes = codes, ("z[0]", "z[1]")
    else:
        centred = codes - codes.mean(0)
        _, s, vt = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        share = (s[:2] ** 2 / (s**2).sum()).tolist()
        axes = tuple(f"principal direction {i + 1} ({100 * v:.0f}% of variance)"
                     for i, v in enumerate(share))
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=5, alpha=0.6)
    else:
        lab = labels.cpu()
        values = lab.unique()
        cmap = plt.get_cmap("tab10" if len(values) <= 10 else "viridis")
        for i, v in enumerate(values.tolist()):
            keep = lab == v
            ax.scatter(xy[keep, 0], xy[keep, 1], s=5, alpha=0.6,
                       color=cmap(i % 10 if len(values) <= 10 else i / (len(values) - 1)),
                       label=str(v))
        ax.legend(title=label_name, markerscale=3, fontsize=7, loc="best")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(f"{model.name}: test set codes (posterior means)")
    return save_figure(fig, path)


def save_latent_pictures(model: LatentModel, data, folder: str | Path) -> list[Path]:
    """``interpolation.png``, ``traversal.png`` (images only) and ``latent_map.png`` of a run."""
    folder = Path(folder)
    y = data.test_y if model.is_conditional else None
    paths = []
    if is_image(model.data_shape) and data.test_x.shape[0] >= 4:
        paths.append(save_interpolation(model, data.test_x, folder / "interpolation.png", y=y))
        paths.append(save_traversal(model, data.test_x, folder / "traversal.png", y=y))
    if latent_means(model, data.test_x[:1], None if y is None else y[:1]).shape[1] >= 2:
        paths.append(save_latent_map(model, data.test_x, data.test_y,
                                     folder / "latent_map.png", y=y))
    return paths


def save_latent_picture(model: LatentModel, data, kind: str, path: str | Path) -> Path:
    """One of :data:`KINDS` for the test split of ``data`` (``pyro-vae plot``)."""
    from pyro_vae.errors import check_choice

    check_choice("picture", kind, KINDS)
    y = data.test_y if model.is_conditional else None
    if kind == "interpolation":
        return save_interpolation(model, data.test_x, path, y=y)
    if kind == "traversal":
        return save_traversal(model, data.test_x, path, y=y)
    return save_latent_map(model, data.test_x, data.test_y, path, y=y)
