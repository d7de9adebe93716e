r"""DReG: the doubly reparameterized gradient estimator of the IWAE bound (Tucker, Lawson, Gu &
Maddison 2019).

With :math:`z_k = z(\epsilon_k, \phi)` reparameterized, log weights
:math:`\ell_k = \log p_\theta(x, z_k) - \log q_\phi(z_k|x)` and normalized weights
:math:`\tilde w_k = e^{\ell_k} / \sum_j e^{\ell_j}`, the IWAE gradient splits into

.. math::

    \nabla_\theta \mathcal L_K = \mathbb E\Big[\sum_k \tilde w_k\,
        \nabla_\theta \log p_\theta(x, z_k)\Big], \qquad
    \nabla_\phi \mathcal L_K = \mathbb E\Big[\sum_k \tilde w_k^2\,
        \frac{\partial \ell_k}{\partial z_k} \frac{\partial z_k}{\partial \phi}\Big],

the second obtained by applying the reparameterization trick a second time to the score term
:math:`\mathbb E[\sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k)]`. It has no score term, so
its variance does not grow as the guide gets good (the signal-to-noise ratio of the plain
IWAE guide gradient decays like :math:`1/\sqrt K`, Rainforth et al. 2018; DReG's does not).

The surrogate: :math:`\sum_k \mathrm{stop}(\tilde w_k^2)\,\ell_k^{\perp}` where
:math:`\ell^{\perp}` scores :math:`z_k` under the guide's distribution with its parameters
stopped (``pyro.distributions.util.detach``), plus
:math:`\sum_k \mathrm{stop}(\tilde w_k - \tilde w_k^2) \log p_\theta(x, \mathrm{stop}(z_k))`,
which tops the model parameters' gradient up to the ordinary IWAE one. Every guide site must
be reparameterizable; the guide's sites should depend on x only (one stochastic layer): for a
hierarchical guide, stopping the parameters of q(z2 | z1) also cuts the path from z1.

G. Tucker, D. Lawson, S. Gu, C. J. Maddison. Doubly reparameterized gradient estimators for
Monte Carlo objectives. ICLR 2019.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.estimators.base import MultiSampleELBO
from pyro_vae.estimators.traces import (
    check_reparameterized,
    importance_traces,
    point_log_probs,
    replay_detached,
)


class DReG_IWAE_ELBO(MultiSampleELBO):
    """The IWAE bound L_K with DReG gradients for the guide; see the module docstring."""

    objective_name = "iwae-dreg"

    def _bound_and_surrogate(self, model, guide, args, kwargs):
        model_trace, guide_trace = importance_traces(self, model, guide, args, kwargs)
        check_reparameterized(self.objective_name, guide_trace)
        lp = point_log_probs(model_trace, guide_trace, detach_guide_params=True)
        log_w = lp.log_w  # gradients: theta through log p, phi through z only
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        w = torch.softmax(log_w.detach(), dim=0)
        model_at_stopped_z = replay_detached(self, model, guide_trace, args, kwargs)
        log_p_stopped = point_log_probs(model_at_stopped_z, guide_trace).log_p
        surrogate = (w.pow(2) * log_w + (w - w.pow(2)) * log_p_stopped).sum(0)
        return lp.data_scale * bound.sum(), lp.data_scale * surrogate.sum()
