r"""Semi-supervised classification with few labels: the M1 scheme and its baselines.

Kingma et al. (2014) compare, with N labelled points of each class and the rest unlabelled:

* **pixels**: a shallow classifier fitted on the raw pixels of the labelled points;
* **M1**: an unsupervised latent variable model (any run: vae, ae, dae, ...) trained on all
  the training images; a shallow classifier fitted on the *codes* of the labelled points, the
  mean of the run's guide, :func:`pyro_vae.evaluate.latent_means` (``encode`` for a model
  whose guide is a point mass);
* **M2**: the semi-supervised VAE (:mod:`pyro_vae.models.ssvae`), whose own classifier
  q(y | x) ``pyro-vae evaluate`` scores as ``test_accuracy``;
* **M1+M2** (Kingma's stacked model): M2 trained on M1's codes instead of the pixels, with a
  Gaussian likelihood: :func:`export_codes` writes a trained run's codes of every training and
  test point, with all their labels, to an ``.npz`` that keeps the run's split (arrays ``x``,
  ``y``, ``x_test``, ``y_test``), so ``--dataset codes.npz --labels-per-class N --label-seed s``
  keeps the labels of the same points as the run's own data with those options
  (:func:`pyro_vae.data.keep_labels` depends only on the labels and the seed).

The shallow classifier is scikit-learn's :class:`~sklearn.linear_model.LogisticRegression`
(multinomial, L2 with ``C=1``) or :class:`~sklearn.svm.SVC` (RBF kernel), fitted on the
labelled training points of a data set loaded with ``--labels-per-class`` (labels -1 are
unlabelled; :func:`pyro_vae.data.keep_labels`). The training images are read as an evaluation
sees them (:meth:`~pyro_vae.data.Dataset.train_eval_x`: one fixed binarized draw of grey
images), like the test split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data import Dataset, load_dataset
from pyro_vae.errors import DataError, check_choice
from pyro_vae.evaluate import latent_means
from pyro_vae.models.base import LatentModel

CLASSIFIERS = ("logistic", "svc")


def labelled_points(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points whose labels were kept (label >= 0) and their labels."""
    if data.train_y is None or data.test_y is None:
        raise DataError(f"data set {data.name} has no labels to classify")
    keep = data.train_y >= 0
    if not bool(keep.any()):
        raise DataError(f"data set {data.name} keeps no training labels")
    x = data.train_eval_x()
    return x[keep.to(x.device)], data.train_y[keep]


def make_classifier(kind: str = "logistic", seed: int = 0):
    """An unfitted scikit-learn classifier: ``logistic`` or ``svc``."""
    check_choice("classifier", kind, CLASSIFIERS)
    if kind == "svc":
        from sklearn.svm import SVC

        return SVC(kernel="rbf", C=10.0, gamma="scale", random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=5000, random_state=seed)


def fit_and_score(train_features: torch.Tensor, train_y: torch.Tensor,
                  test_features: torch.Tensor, test_y: torch.Tensor,
                  kind: str = "logistic", seed: int = 0) -> float:
    """Test accuracy of a :func:`make_classifier` fitted on the training features."""
    def as_array(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().flatten(1).double().numpy()

    clf = make_classifier(kind, seed)
    clf.fit(as_array(train_features), train_y.cpu().numpy())
    return float((clf.predict(as_array(test_features)) == test_y.cpu().numpy()).mean())


def pixel_accuracy(data: Dataset, kind: str = "logistic", seed: int = 0) -> float:
    """The baseline: the classifier on the raw pixels of the labelled training points."""
    x, y = labelled_points(data)
    return fit_and_score(x, y, data.test_x, data.test_y, kind, seed)


@torch.no_grad()
def latent_accuracy(model: LatentModel, data: Dataset, kind: str = "logistic",
                    seed: int = 0) -> float:
    """M1: the classifier on the guide's means of the labelled training points (the run's
    model, trained without labels), scored on the test points' means."""
    x, y = labelled_points(data)
    return fit_and_score(latent_means(model, x), y, latent_means(model, data.test_x),
                         data.test_y, kind, seed)


@torch.no_grad()
def export_codes(run, path: str | Path, batch_size: int = 1000) -> Path:
    """Write the codes of a trained run (a :class:`pyro_vae.runner.Run`, e.g. ``run(...).run``
    or :func:`pyro_vae.runner.open_run`) to the ``.npz`` file ``path``: ``x`` the guide's means
    (:func:`~pyro_vae.evaluate.latent_means`) of every training point as an evaluation sees it
    (:meth:`~pyro_vae.data.Dataset.train_eval_x`, as M1 uses them), in the run's order, ``x_test``
    those of the test split, ``y`` and ``y_test`` all their labels (also the ones the run's
    ``--labels-per-class`` dropped: a run on the codes drops them again with its own options).
    Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise DataError(f"codes are written to an .npz file, got {path}")
    data = run.data
    if data.train_y is None or data.test_y is None:
        raise DataError(f"data set {data.name} has no labels to export with the codes")
    full = data
    if run.config.data.labels_per_class is not None:  # the labels the option dropped
        full = load_dataset(run.config.dataset, binarize=data.binarize, device="cpu",
                            options=replace(run.config.data, labels_per_class=None))
    model = run.model.eval()

    def codes(x: torch.Tensor) -> np.ndarray:
        return latent_means(model, x, batch_size=batch_size).cpu().numpy().astype(np.float32)

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=codes(data.train_eval_x()), y=full.train_y.cpu().numpy(),
             x_test=codes(data.test_x), y_test=full.test_y.cpu().numpy())
    return path


__all__ = ["CLASSIFIERS", "export_codes", "fit_and_score", "labelled_points", "latent_accuracy",
           "make_classifier", "pixel_accuracy"]
