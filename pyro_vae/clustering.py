r"""Clustering scores of any assignment against known labels, and of a model that clusters.

* :func:`cluster_accuracy`: the best one-to-one matching of clusters to classes (Hungarian
  algorithm, :func:`scipy.optimize.linear_sum_assignment` on the contingency table),
  :math:`\max_{m} \frac{1}{N} \sum_n 1[y_n = m(c_n)]`; clusters left without a class count
  as wrong (K clusters > C classes);
* :func:`nmi`: normalized mutual information (:func:`sklearn.metrics.normalized_mutual_info_score`,
  arithmetic normalization), 1 for the same partition up to renaming, ~0 for independent ones;
* :func:`model_assignments`: a model with the clustering capability (a method
  ``cluster_probabilities(x) -> (N, K)``, e.g. :class:`pyro_vae.models.vade.VaDE`) gives the
  argmax cluster of each point; :func:`cluster_scores` scores it on a split.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

__all__ = ["can_cluster", "cluster_accuracy", "cluster_scores", "model_assignments", "nmi",
           "train_points"]
TRAIN_BINARIZATION_SEED = 2468


def _array(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).reshape(-1).astype(np.int64)


def cluster_accuracy(labels, assignments) -> float:
    """Accuracy of ``assignments`` under the best one-to-one map of clusters to ``labels``."""
    y, c = _array(labels), _array(assignments)
    if y.shape != c.shape:
        raise ValueError(f"{len(y)} labels but {len(c)} assignments")
    if len(y) == 0:
        raise ValueError("no points to score")
    _, yi = np.unique(y, return_inverse=True)
    _, ci = np.unique(c, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, yi), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(y))


def nmi(labels, assignments) -> float:
    """Normalized mutual information of two labellings."""
    return float(normalized_mutual_info_score(_array(labels), _array(assignments)))


def can_cluster(model) -> bool:
    """Whether ``model`` has the clustering capability (``cluster_probabilities``)."""
    return callable(getattr(model, "cluster_probabilities", None))


@torch.no_grad()
def model_assignments(model, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """argmax_c of ``model.cluster_probabilities`` for every point of ``x``."""
    model.eval()
    return torch.cat([model.cluster_probabilities(x[i:i + batch_size]).argmax(-1)
                      for i in range(0, x.shape[0], batch_size)])


def cluster_scores(model, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"accuracy", "nmi", "clusters_used"}`` of the model's clusters of ``x``."""
    c = model_assignments(model, x)
    return {"accuracy": cluster_accuracy(labels, c), "nmi": nmi(labels, c),
            "clusters_used": int(torch.unique(c).numel())}


def train_points(data) -> torch.Tensor:
    """The training split as the model scores it, on the test split's device: with ``dynamic``
    binarization one fixed draw (a private generator; the global RNG is untouched)."""
    x = data.train_x
    if data.binarize == "dynamic":
        gen = torch.Generator(device="cpu").manual_seed(TRAIN_BINARIZATION_SEED)
        x = (torch.rand(x.shape, generator=gen).to(x.device) < x).to(x.dtype)
    return x.to(data.test_x.device)
