"""``shapes``: a dSprites-like data set (Matthey et al. 2017) drawn in code, with known factors.

Each image is one white shape on black, binary, drawn from five independent factors:

============  ==========================================================================
``shape``     square, ellipse, heart (the label ``y``)
``scale``     4 sizes, 0.5 to 1 of the largest
``rotation``  8 angles in [0, 2 pi)
``x``, ``y``  8 positions each, across the free width of the image
============  ==========================================================================

The data set is the full grid of the factors (3 x 4 x 8 x 8 x 8 = 6,144 images), so the
factors are independent and uniform, as in dSprites; a seeded permutation puts 1,024 of them
in the test split. ``shapes`` is 32x32, ``shapes-64`` 64x64. A pixel is on when its centre
lies inside the shape, so the images are exactly binary and need no binarization (``dynamic``
leaves 0/1 values as they are).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
FACTOR_SIZES = (3, 4, 8, 8, 8)
NUM_TEST = 1024
SEED = 5


def factor_grid() -> np.ndarray:
    """Every combination of factor indices, ``(6144, 5)`` int64, in row-major order."""
    axes = np.meshgrid(*(np.arange(n) for n in FACTOR_SIZES), indexing="ij")
    return np.stack([a.ravel() for a in axes], axis=1).astype(np.int64)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the canonical-frame points (u, v) lie inside the unit shape of each kind."""
    square = (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    ellipse = u**2 + (v / 0.5) ** 2 <= 1.0
    hu, hv = u / 0.9, -v / 0.9 + 0.15  # the heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3, tip down
    heart = (hu**2 + hv**2 - 1) ** 3 - hu**2 * hv**3 <= 0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render(factors: np.ndarray, size: int = 32) -> np.ndarray:
    """Binary images ``(N, 1, size, size)`` float32 of the given factor indices ``(N, 5)``."""
    f = np.asarray(factors)
    shape = f[:, 0, None, None]
    radius = 0.2 * size * (0.5 + f[:, 1] / 6.0)[:, None, None]  # 0.1 to 0.2 of the width
    angle = (2 * math.pi * f[:, 2] / FACTOR_SIZES[2])[:, None, None]
    margin = 0.2 * size * 1.2
    span = (size - 2 * margin) / (FACTOR_SIZES[3] - 1)
    cx = (margin + span * f[:, 3])[:, None, None]
    cy = (margin + span * f[:, 4])[:, None, None]
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = (cols[None] - cx) / radius, (rows[None] - cy) / radius
    u = np.cos(angle) * dx + np.sin(angle) * dy  # rotate the pixel into the shape's frame
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    return _inside(shape, u, v).astype(np.float32)[:, None]


@cache
def load_shapes(size: int = 32):
    """The ``shapes`` data set as :class:`pyro_vae.data.RawData`: labels are the shape index,
    the factor indices of both splits ride along (``train_factors``, ``test_factors``)."""
    from pyro_vae.data import RawData

    grid = factor_grid()
    perm = np.random.default_rng(SEED).permutation(len(grid))
    test, train = np.sort(perm[:NUM_TEST]), np.sort(perm[NUM_TEST:])
    x = render(grid, size)
    return RawData(x[train], grid[train, 0], x[test], grid[test, 0], "image",
                   train_factors=grid[train], test_factors=grid[test],
                   factor_names=FACTOR_NAMES)
