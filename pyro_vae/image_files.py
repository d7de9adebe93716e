"""A user's own data files as arrays: a folder of PNG/JPEG images, an ``.npz``/``.npy`` file.

:func:`read_folder` decodes every image of a folder once, through a torch ``DataLoader`` with
worker processes (PIL decodes; a tqdm bar counts the images), into one ``uint8`` array of shape
(N, C, H, W). Class sub-folders are labels: their sorted names become 0..C-1. Hidden files and
folders (a leading dot) are skipped. Without
``size`` every image must have the first image's size; with it each image is resized
(PIL, bilinear with antialiasing) to ``(height, width)``. ``channels`` ``"grey"`` or ``"rgb"``
converts each image (PIL's conversions); None keeps one channel when every image is
single-channel and three otherwise.

:func:`read_arrays` reads ``x`` (and an optional ``y``; ``x_test`` and ``y_test`` for a file
with its own test split) from a ``.npz`` file or ``x`` alone from a ``.npy`` file: (N, D)
arrays are real-valued data, (N, H, W), (N, C, H, W) and
(N, H, W, C) arrays with C in {1, 3} are images, as ``uint8`` 0..255 or floats in [0, 1].

Every problem is a :class:`~pyro_vae.errors.DataError` of one line naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_vae.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes of single-channel images
MODES = {"grey": "L", "rgb": "RGB"}
WORKERS_FROM = 256  # folders of fewer images decode in the main process (no start-up cost)


def default_workers(num_images: int) -> int:
    """Decoding processes for ``num_images`` images: none for a few, else up to 8 (one a core)."""
    if num_images < WORKERS_FROM:
        return 0
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def list_images(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str]]:
    """The image files of ``folder`` (sorted), their labels (None without class sub-folders)
    and the class names."""
    entries = sorted(e for e in folder.iterdir() if not e.name.startswith("."))
    if not entries:  # hidden entries (.DS_Store, .ipynb_checkpoints, ._x.png) do not count
        raise DataError(f"data folder {folder} is empty")
    subdirs = [e for e in entries if e.is_dir()]
    top = [e for e in entries if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
    classes = [d for d in subdirs if any(_images_under(d))]
    if classes and top:
        raise DataError(f"data folder {folder} holds images both at its top ({top[0].name}) and "
                        f"in class sub-folders ({classes[0].name}); keep one layout")
    if not classes:
        if not top:
            raise DataError(f"data folder {folder} holds no PNG or JPEG images "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        return top, None, []
    paths, labels = [], []
    for label, d in enumerate(classes):
        found = sorted(_images_under(d))
        paths += found
        labels += [label] * len(found)
    return paths, np.asarray(labels, dtype=np.int64), [d.name for d in classes]


def _images_under(folder: Path):
    return (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class _Decoder(torch.utils.data.Dataset):
    """Image ``i`` -> ``(i, uint8 array (C, H, W), single-channel?, error line or None)``;
    a problem is returned, not raised, so that a worker's error stays one line."""

    def __init__(self, paths: Sequence[Path], size: tuple[int, int] | None, mode: str,
                 crop_square: bool):
        self.paths, self.size, self.mode, self.crop_square = list(paths), size, mode, crop_square
        self.resize = size is not None  # else every image must have the first one's size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        path = self.paths[i]
        try:
            with Image.open(path) as image:
                image.load()
                grey = image.mode in GREY_MODES
                image = image.convert(self.mode)
        except Exception as exc:  # PIL raises many kinds for a bad file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return i, None, False, f"cannot read image {path} ({reason})"
        if self.crop_square:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        height, width = self.size
        if image.size != (width, height):
            if not self.resize:
                return i, None, False, (f"image {path} is {image.height}x{image.width}, others "
                                        f"are {height}x{width}; give --image-size to resize them")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return i, np.ascontiguousarray(array), grey, None


def _collate(items):
    return items


def read_folder(folder: Path, *, size: tuple[int, int] | None = None,
                channels: str | None = None, num_workers: int | None = None,
                crop_square: bool = False,
                paths: Sequence[Path] | None = None) -> tuple[np.ndarray, np.ndarray | None,
                                                             list[str]]:
    """``(x uint8 (N, C, H, W), labels or None, class names)`` of an image folder (see the
    module docstring). ``paths`` decodes those files instead of listing ``folder``."""
    from PIL import Image

    if paths is None:
        paths, labels, classes = list_images(folder)
    else:
        labels, classes = None, []
    decoder = _Decoder(paths, size, MODES.get(channels, "RGB"), crop_square)
    if size is None:
        try:
            with Image.open(paths[0]) as first:
                width, height = first.size
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cannot read image {paths[0]} ({reason})") from None
        if crop_square:
            width = height = min(width, height)
        decoder.size, decoder.resize = (height, width), False
    height, width = decoder.size
    depth = 1 if channels == "grey" else 3
    x = np.empty((len(paths), depth, height, width), dtype=np.uint8)
    all_grey = True
    workers = default_workers(len(paths)) if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(decoder, batch_size=32, num_workers=workers,
                                         collate_fn=_collate)
    with tqdm(total=len(paths), disable=None, desc="decoding images", unit="img") as bar:
        for batch in loader:
            for i, array, grey, problem in batch:
                if problem is not None:
                    raise DataError(problem)
                x[i] = array
                all_grey &= grey
            bar.update(len(batch))
    if channels is None and all_grey:  # "L" -> "RGB" copies the grey value to each channel
        x = np.ascontiguousarray(x[:, :1])
    return x, labels, classes


ARRAY_NAMES = ("x", "y", "x_test", "y_test")  # what a .npz may hold (x required)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of :data:`ARRAY_NAMES` a ``.npz`` holds (``x`` required; ``x_test`` and
    ``y_test``: its own test split) or ``{"x": ...}`` of a ``.npy``."""
    try:
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays.files:
                raise DataError(f"{path} has no array 'x' (it holds: "
                                f"{', '.join(arrays.files) or 'nothing'}); save the data "
                                "as np.savez(path, x=..., y=...)")
            return {name: arrays[name] for name in ARRAY_NAMES if name in arrays.files}
    except DataError:
        raise
    except Exception as exc:  # a truncated file, a pickled object array, not numpy at all
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path} ({reason})") from None


def as_points(x: np.ndarray, path: Path, name: str = "x") -> tuple[np.ndarray, str]:
    """``x`` as ``(points, kind)``: real (N, D) float32, or images (N, C, H, W) kept as
    ``uint8`` or float32 in [0, 1]."""
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError(f"{path}: {name} holds {x.dtype} values; expected numbers")
    if x.ndim < 2 or x.shape[0] < 1:
        raise DataError(f"{path}: {name} has shape {x.shape}; expected (points, features), "
                        "(points, H, W), (points, C, H, W) or (points, H, W, C)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(1))[0])
        raise DataError(f"{path}: {name} holds NaN or infinite values (first at point {bad})")
    if x.ndim == 2:
        return x.astype(np.float32), "real"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{path}: {name} has shape {x.shape}; images need 1 or 3 channels, as "
                        "(points, C, H, W) or (points, H, W, C)")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), "image"
    if x.dtype.kind in "iu":
        raise DataError(f"{path}: {name} holds {x.dtype} images; save them as uint8 (0..255) or "
                        "floats in [0, 1]")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{path}: {name} holds images with values in [{x.min():g}, {x.max():g}]; "
                        "images need uint8 0..255 or floats in [0, 1]")
    return np.ascontiguousarray(x, dtype=np.float32), "image"


def as_labels(y: np.ndarray | None, num: int, path: Path,
              name: str = "y") -> np.ndarray | None:
    """Labels as int64 0..C-1, checked against ``num`` points."""
    if y is None:
        return None
    y = np.asarray(y).reshape(-1) if np.asarray(y).ndim else np.asarray(y)
    if y.ndim != 1 or len(y) != num:
        raise DataError(f"{path}: {name} has {y.size} labels for {num} points; give one per point")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise DataError(f"{path}: {name} holds {y.dtype} values; labels are whole numbers 0..C-1")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {name} holds a negative label ({int(y.min())}); labels are "
                        "0..C-1")
    return y.astype(np.int64)


def reshape_images(x: np.ndarray, size: tuple[int, int] | None,
                   channels: str | None) -> np.ndarray:
    """Images (N, C, H, W), uint8 or float32 in [0, 1], converted to ``channels`` (``grey``:
    ITU-R 601-2 luma, PIL's; ``rgb``: the grey value in each channel) and resized to ``size``
    (bilinear, antialiased; torchvision), keeping the dtype."""
    from torchvision.transforms.v2 import functional as tvf

    t = torch.from_numpy(np.ascontiguousarray(x))
    if channels == "grey" and t.shape[1] == 3:
        t = tvf.rgb_to_grayscale(t, num_output_channels=1)
    elif channels == "rgb" and t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if size is not None and tuple(t.shape[2:]) != tuple(size):
        t = tvf.resize(t, list(size), antialias=True)
        if t.is_floating_point():
            t = t.clamp(0, 1)
    return np.ascontiguousarray(t.numpy())
