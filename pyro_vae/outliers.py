r"""Outlier detection by the model's own density: per-point log p(x), ELBO, reconstruction error.

A trained latent-variable model assigns every point a marginal likelihood
:math:`\log p(x) = \log \mathbb{E}_{q(z|x)}[p(x, z) / q(z|x)]`, estimated per point by
importance sampling from the guide (:mod:`pyro_vae.importance`: S samples, streamed, with the
delta-method Monte Carlo standard error of each point's estimate). Three scoring rules, each
"higher = more typical":

* ``log_px``: the importance-sampled :math:`\log p(x)` from all S samples;
* ``elbo``: the mean of the same S log weights, :math:`\mathcal{L}_1 \le \log p(x)`;
* ``recon_error``: :math:`\lVert x - \hat x\rVert^2`, :math:`\hat x` the likelihood's mean at
  the guide's mean (``model.reconstruct``); here *lower* = more typical.

:func:`outlier_auc` is the ROC AUC of telling outliers from inliers by a rule (1: every
outlier scored as less typical than every inlier; 0.5: chance), by
``sklearn.metrics.roc_auc_score``. A density can rate simple images (blank, sparse) *higher*
than its training data (Nalisnick et al. 2019, "Do deep generative models know what they don't
know?"): then the AUC of ``log_px`` falls below 0.5, and that is reported as measured.

:func:`score_run` is the run-level front (``pyro-vae score``): a run folder, a data set spec
(what ``--dataset`` takes), a split; :func:`write_scores` writes the CSV atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data import load_dataset, resolve_dataset
from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.importance import check_points, importance_bounds
from pyro_vae.models.base import LatentModel
from pyro_vae.runs import atomic_write

SPLITS = ("test", "train")
COLUMNS = ("index", "log_px", "log_px_mc_stderr", "elbo", "recon_error")
RULES = {"log_px": 1.0, "elbo": 1.0, "recon_error": -1.0}  # sign: higher x sign = typical


@dataclass
class PointScores:
    """Per-point scores (tensors of length N, on the CPU, double precision)."""

    log_px: torch.Tensor
    log_px_mc_stderr: torch.Tensor
    elbo: torch.Tensor
    recon_error: torch.Tensor
    num_samples: int

    def __len__(self) -> int:
        return len(self.log_px)

    def rows(self) -> list[dict]:
        cols = {c: getattr(self, c).tolist() for c in COLUMNS[1:]}
        return [{"index": i, **{c: v[i] for c, v in cols.items()}} for i in range(len(self))]


@torch.no_grad()
def reconstruction_error(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                         batch_size: int = 1000) -> torch.Tensor:
    """:math:`\\lVert x - \\hat x\\rVert^2` per point, :math:`\\hat x` = ``model.reconstruct``."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        yb = None if y is None else y[i:i + batch_size]
        out.append((xb - model.reconstruct(xb, yb)).pow(2).flatten(1).sum(1).double().cpu())
    return torch.cat(out)


def score_points(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                 num_samples: int = 1000, max_elements: int = 2**25,
                 progress: bool = False) -> PointScores:
    """log p(x) (with its Monte Carlo standard error), ELBO and reconstruction error of every
    point of ``x``, from ``num_samples`` importance samples of the guide a point."""
    check_positive("num_samples", num_samples)
    check_points(model, x, y)
    model.eval()
    b = importance_bounds(model, x, y, num_samples, ks=(),
                          max_elements=max_elements, progress=progress)
    return PointScores(b.log_px.double().cpu(), b.log_px_mc_stderr.double().cpu(),
                       b.elbo.double().cpu(), reconstruction_error(model, x, y), num_samples)


def outlier_auc(inliers: PointScores, outliers: PointScores, rule: str = "log_px") -> float:
    """ROC AUC of telling ``outliers`` from ``inliers`` by ``rule`` (a column of
    :data:`RULES`): the chance that a random outlier looks less typical than a random inlier."""
    from sklearn.metrics import roc_auc_score

    check_choice("scoring rule", rule, tuple(RULES))
    sign = RULES[rule]
    atypical = torch.cat([-sign * getattr(inliers, rule), -sign * getattr(outliers, rule)])
    labels = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    return float(roc_auc_score(labels, atypical.numpy()))


def write_scores(path: str | os.PathLike, scores: PointScores) -> Path:
    """One CSV row per point (:data:`COLUMNS`), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(scores.rows())
    atomic_write(Path(path), buf.getvalue().encode())
    return Path(path)


def score_run(run: str | os.PathLike, data: str, *, split: str = "test",
              num_samples: int = 1000, image_size: str | None = None,
              device: torch.device | str = "cpu", progress: bool = False) -> PointScores:
    """Score the points of ``data`` (a registered name, a folder, a .npz/.npy file; its
    ``split``) with a trained run's model, the data binarized as the run's test split is
    (binary images go through unchanged; ``image_size`` resizes them first)."""
    from pyro_vae.runner import open_run

    check_choice("split", split, SPLITS)
    check_positive("--num-samples", num_samples)
    opened = open_run(run, device)
    binarize = opened.config.binarize
    if binarize == "dynamic":
        binarize = "fixed"  # a binarized draw of either split, seeded
    options = replace(opened.config.data, image_size=image_size) if image_size else \
        opened.config.data
    resolve_dataset(data)  # an unknown name or a missing path: its own line
    try:
        other = load_dataset(data, binarize=binarize, device=device, options=options)
    except ConfigError as exc:  # e.g. real-valued data for a run on binarized images
        raise DataError(f"--data {data} does not fit run {run} (its data: {opened.config.dataset}, "
                        f"binarization {opened.config.binarize}): {exc}") from None
    x = other.test_x if split == "test" else other.train_eval_x()
    if tuple(x.shape[1:]) != tuple(opened.model.data_shape):
        raise DataError(f"--data {data} has points of shape {tuple(x.shape[1:])}, run {run}'s "
                        f"model takes {tuple(opened.model.data_shape)}"
                        + ("; --image-size resizes images" if x.dim() == 4 else ""))
    y = None
    if opened.model.is_conditional:
        y = other.test_y if split == "test" else other.train_y
        if y is None:
            raise DataError(f"run {run}'s model is conditional; --data {data} has no labels")
    return score_points(opened.model, x, y, num_samples, progress=progress)


def summarize(scores: PointScores) -> dict:
    """Means over points, and the Monte Carlo standard error of the mean log p(x)."""
    n = len(scores)
    return {"points": n, "log_px": scores.log_px.mean().item(),
            "log_px_mc_stderr": (scores.log_px_mc_stderr.pow(2).sum().sqrt() / n).item(),
            "elbo": scores.elbo.mean().item(), "recon_error": scores.recon_error.mean().item(),
            "finite": bool(all(math.isfinite(v) for c in COLUMNS[1:]
                               for v in getattr(scores, c).tolist()))}


__all__ = ["COLUMNS", "RULES", "SPLITS", "PointScores", "outlier_auc", "reconstruction_error",
           "score_points", "score_run", "summarize", "write_scores"]
