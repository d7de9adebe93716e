"""Where data come from, before a run's choices: :class:`RawData` (train/test arrays as
loaded), the data options (:class:`DataConfig`), the seeded split of a source without one
(:func:`split_indices`), the torchvision downloads (``mnist``, ``fashion-mnist``, ``cifar10``,
``celeba``, to :func:`default_root`) and a user's own files (a folder of images, an
``.npz``/``.npy`` file, read by :mod:`pyro_vae.image_files`).

:mod:`pyro_vae.data` registers these loaders in ``DATASETS`` and resolves names and paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.image_files import as_labels, as_points, read_arrays, read_folder

CHANNELS = {"grey": 1, "rgb": 3}
DATA_ON = ("auto", "device", "host")
SPLIT_SEED = 0  # the train/test split never depends on --seed
TEST_FRACTION = 0.1  # test share of a source without its own split (per class when labelled)


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


def parse_image_size(value) -> tuple[int, int] | None:
    """``64``, ``"64"``, ``"32x48"`` (height x width) or ``[32, 48]`` -> ``(height, width)``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        try:
            value = [int(p) for p in parts]
        except ValueError:
            value = None
    elif isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = [value[0], value[0]]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ConfigError("--image-size must be N or HxW (positive whole numbers), e.g. 64 or "
                          "32x48")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class DataConfig:
    """The data options a run records beside the data set (``config.json``'s ``data``).

    ``image_size`` (height, width) resizes images (required for a folder of mixed sizes);
    ``channels`` ``grey`` or ``rgb`` converts them (None: as the files are, grey if every image
    is single-channel); ``data_on`` ``device`` keeps the training images on the training device,
    ``host`` keeps them in host memory and copies each minibatch over, ``auto`` chooses host
    when they exceed :data:`HOST_BUDGET` of the free device memory (on the CPU: device).

    ``labels_per_class`` N keeps the labels of N training points of each class and marks the
    rest unlabelled (label -1), for semi-supervised training; which points is drawn by
    ``label_seed`` (its own seed, not ``--seed``; :func:`pyro_vae.data.keep_labels`). The test
    labels are all kept."""

    image_size: tuple[int, int] | None = None
    channels: str | None = None
    data_on: str = "auto"
    labels_per_class: int | None = None
    label_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", parse_image_size(self.image_size))
        if self.channels is not None:
            check_choice("channels", self.channels, CHANNELS)
        check_choice("data-on", self.data_on, DATA_ON)
        if self.labels_per_class is not None:
            check_positive("labels-per-class", self.labels_per_class)
        if isinstance(self.label_seed, bool) or not isinstance(self.label_seed, int) \
                or self.label_seed < 0:
            raise ConfigError(f"label-seed must be a whole number >= 0, got {self.label_seed!r}")

    def to_json(self) -> dict:
        size = None if self.image_size is None else list(self.image_size)
        values = {"image_size": size, "channels": self.channels, "data_on": self.data_on}
        if self.labels_per_class is not None:  # older runs' config.json stay as they were
            values |= {"labels_per_class": self.labels_per_class, "label_seed": self.label_seed}
        return values

    @classmethod
    def from_json(cls, values) -> DataConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"data must be a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - {"image_size", "channels", "data_on",
                                         "labels_per_class", "label_seed"})
        if unknown:
            raise ConfigError(f"data has an unknown setting {unknown[0]!r}")
        return cls(**values)


def default_root() -> Path:
    """Where downloaded data sets are cached: ``$PYRO_VAE_DATA`` or ``~/.cache/pyro_vae``."""
    return Path(os.environ.get("PYRO_VAE_DATA", Path.home() / ".cache" / "pyro_vae"))


def _download(pretty: str, get: Callable[[str], object]) -> object:
    """``get(root)`` (a torchvision data set with ``download=True``); any failure is one line."""
    import torchvision.datasets  # noqa: F401 (imported here: slow, and only for downloads)

    root = default_root()
    try:
        return get(str(root))
    except Exception as exc:  # network, disk, corrupt archive: all end the same way
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"could not get {pretty} into {root} ({reason}); offline? "
                        "use --dataset mnist-5k, the bundled subset") from None


def _torchvision_loader(cls_name: str, pretty: str) -> Callable[[], RawData]:
    def load() -> RawData:
        import torchvision.datasets as tvd

        parts = {}
        for train in (True, False):
            ds = _download(pretty, lambda root, t=train: getattr(tvd, cls_name)(
                root, train=t, download=True))
            parts[train] = (ds.data.numpy().astype(np.float32)[:, None] / 255.0,
                            ds.targets.numpy().astype(np.int64))
        return RawData(parts[True][0], parts[True][1], parts[False][0], parts[False][1], "image")

    return load


def _load_cifar10(options: DataConfig) -> RawData:
    """CIFAR-10 as uint8 (N, 3, 32, 32) images and their labels."""
    import torchvision.datasets as tvd

    parts = {}
    for train in (True, False):
        ds = _download("CIFAR-10", lambda root, t=train: tvd.CIFAR10(root, train=t,
                                                                      download=True))
        parts[train] = (np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)),
                        np.asarray(ds.targets, dtype=np.int64))
    return RawData(parts[True][0], parts[True][1], parts[False][0], parts[False][1], "image")


def _load_celeba(options: DataConfig) -> RawData:
    """CelebA's aligned faces, centre-cropped to a square and decoded at ``image_size``
    (default 64x64) through :func:`~pyro_vae.image_files.read_folder`; no labels."""
    import torchvision.datasets as tvd

    size = options.image_size or (64, 64)
    parts = {}
    for split in ("train", "test"):
        ds = _download("CelebA", lambda root, sp=split: tvd.CelebA(root, split=sp,
                                                                     target_type=[],
                                                                     download=True))
        folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
        parts[split], _, _ = read_folder(folder, size=size, channels=options.channels or "rgb",
                                         crop_square=True,
                                         paths=[folder / name for name in ds.filename])
    return RawData(parts["train"], None, parts["test"], None, "image")


def split_indices(num: int, labels: np.ndarray | None, where: str,
                  fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (:data:`SPLIT_SEED`) train/test split of ``num`` points: ``fraction`` of each
    class (of all points without labels) to test, at least one of each class of 2 or more."""
    if num < 2:
        raise DataError(f"{where} holds {num} data point(s); a train/test split needs at least 2")
    rng = np.random.default_rng(SPLIT_SEED)
    groups = [np.arange(num)] if labels is None else \
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train, test = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        k = max(1, round(fraction * len(idx))) if len(idx) >= 2 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    test, train = np.sort(np.concatenate(test)), np.sort(np.concatenate(train))
    if not len(test):
        raise DataError(f"{where}: every class holds one point; a split needs a class of 2")
    return train, test


def _split_raw(x: np.ndarray, y: np.ndarray | None, kind: str, where: str) -> RawData:
    train, test = split_indices(len(x), y, where)
    y_train, y_test = (None, None) if y is None else (y[train], y[test])
    return RawData(x[train], y_train, x[test], y_test, kind)


def _load_folder(path: Path, options: DataConfig) -> RawData:
    x, y, _ = read_folder(path, size=options.image_size, channels=options.channels)
    return _split_raw(x, y, "image", str(path))


def _load_arrays(path: Path, options: DataConfig) -> RawData:
    """``x`` (and ``y``) of a ``.npz``/``.npy`` file, split by :func:`split_indices`; or, when
    the file holds ``x_test`` (and ``y_test``), that split as it is (e.g. the codes
    :func:`pyro_vae.semi_supervised.export_codes` writes, which keep a run's own split)."""
    arrays = read_arrays(path)
    x, kind = as_points(arrays["x"], path)
    y = as_labels(arrays.get("y"), len(x), path)
    if "x_test" not in arrays:
        if "y_test" in arrays:
            raise DataError(f"{path} holds y_test but no x_test; give both, or neither")
        return _split_raw(x, y, kind, str(path))
    x_test, test_kind = as_points(arrays["x_test"], path, "x_test")
    if test_kind != kind or x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: x_test holds points of shape {x_test.shape[1:]} ({test_kind}),"
                        f" x of shape {x.shape[1:]} ({kind}); they must match")
    if (y is None) != ("y_test" not in arrays):
        raise DataError(f"{path}: give labels for both splits (y and y_test) or for neither")
    return RawData(x, y, x_test, as_labels(arrays.get("y_test"), len(x_test), path, "y_test"),
                   kind)
