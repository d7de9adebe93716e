"""A small base for multi-sample estimators: one vectorized trace of K particles, a bound to
report and a surrogate to differentiate."""

from __future__ import annotations

import abc

import torch
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.util import warn_if_nan

from pyro_vae.estimators.traces import check_num_particles


class MultiSampleELBO(ELBO, abc.ABC):
    """Subclasses implement :meth:`_bound_and_surrogate`; ``loss`` is minus the bound,
    ``loss_and_grads`` back-propagates minus the surrogate. VIMCO, RWS and DReG draw their
    particles in one vectorized trace (:func:`~pyro_vae.estimators.traces.importance_traces`;
    ``max_plate_nesting`` must count the model's plates plus one for the particles);
    :class:`~pyro_vae.objectives.IWAE_ELBO` goes through Pyro's ``_get_traces`` and so also
    honours ``vectorize_particles=False``."""

    objective_name = "multi-sample"
    min_particles = 2

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = 2,
                 vectorize_particles: bool = True, strict_enumeration_warning: bool = True):
        check_num_particles(self.objective_name, num_particles, self.min_particles)
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _get_trace(self, model, guide, args, kwargs):
        return get_importance_trace("flat", self.max_plate_nesting, model, guide, args, kwargs)

    @abc.abstractmethod
    def _bound_and_surrogate(self, model, guide, args, kwargs) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
        """(estimate of the bound summed over data points, surrogate to differentiate)."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            loss = -self._bound_and_surrogate(model, guide, args, kwargs)[0].item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Minus the surrogate, shifted so that its value is minus the bound.

        It reads nothing back to the host (the fast engine calls it every step; on a GPU each
        read waits for the queued kernels): a NaN loss is caught by the training loop's guard,
        :meth:`loss` and :meth:`loss_and_grads` (which read the value anyway) warn."""
        bound, surrogate = self._bound_and_surrogate(model, guide, args, kwargs)
        return -(bound.detach() + surrogate - surrogate.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        warn_if_nan(loss, "loss")
        loss.backward()
        return loss.item()
