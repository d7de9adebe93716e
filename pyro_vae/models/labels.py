"""What the pairs with a classifier q(y | x) trained on partly labelled data share (ssvae,
dbvae): labels are classes 0..C-1, or ``UNLABELLED`` (-1) where unknown.

:class:`PartlyLabelled` is a mixin for a :class:`~pyro_vae.models.base.LatentModel` with
``num_classes`` and ``class_logits(x) -> (N, C)``:

* ``_known(x, y)``: the labelled points of a minibatch, shapes only (no host read at every
  step), None without labels;
* ``class_factor(site, weight, x, y, known)``: the model's ``pyro.factor`` of
  ``weight * log q(y_n | x_n)`` on the labelled points (zero on the others), inside the data
  plate;
* ``classify(x)``: ``argmax_y q(y | x)`` (the capability ``evaluate``'s test accuracy reads);
* ``check_labels(y, n)``: the label values, once per data set (``train.check_data``,
  evaluation): a label out of range would otherwise index q(y | x) silently.
"""

from __future__ import annotations

import pyro
import torch
from torch.nn import functional as F

from pyro_vae.errors import DataError

UNLABELLED = -1  # = pyro_vae.data.UNLABELLED (models do not import the data layer)


class PartlyLabelled:
    """The labelled-data half of a pair with a classifier (see the module docstring)."""

    has_classifier = True  # classify(x): evaluate reports the test accuracy of q(y | x)

    def _known(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """The labelled points of a minibatch (y >= 0), or None without labels (shapes only:
        no host read at every step)."""
        if y is None:
            return None
        if tuple(y.shape) != (x.shape[0],):
            raise DataError(f"{self.name} labels must be {x.shape[0]} integers "
                            f"({UNLABELLED}: unlabelled)")
        return y >= 0

    def class_factor(self, site: str, weight: float, x: torch.Tensor, y: torch.Tensor,
                     known: torch.Tensor) -> None:
        """``pyro.factor(site, weight * log q(y_n | x_n))`` on the labelled points, 0 on the
        others (call inside the data plate)."""
        log_q = F.log_softmax(self.class_logits(x), -1)
        hit = log_q.gather(-1, y.clamp(min=0).long().unsqueeze(-1)).squeeze(-1)
        pyro.factor(site, weight * torch.where(known, hit, 0.0))

    @torch.no_grad()
    def classify(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """argmax_y q(y | x) for each point."""
        return torch.cat([self.class_logits(x[i:i + batch_size]).argmax(-1)
                          for i in range(0, len(x), batch_size)])

    def check_labels(self, y: torch.Tensor | None, n: int, what: str | None = None) -> None:
        """Raise :class:`DataError` unless ``y`` is None or holds ``n`` labels in
        -1..num_classes-1 (-1: unlabelled). Reads the values back: once per data set, not by
        the programs at every step."""
        if y is None:
            return
        c = self.num_classes
        if tuple(y.shape) != (n,) or bool(((y < UNLABELLED) | (y >= c)).any()):
            raise DataError(f"{what or f'{self.name} labels'} must be {n} integers in "
                            f"0..{c - 1}, or {UNLABELLED} for unlabelled points (a data set "
                            f"with more classes than --num-classes {c}?)")


__all__ = ["UNLABELLED", "PartlyLabelled"]
