r"""VIMCO: the multi-sample score-function estimator of the IWAE bound (Mnih & Rezende 2016).

For a data point x, K guide samples :math:`z_k \sim q_\phi(z|x)` and log weights
:math:`\ell_k = \log p_\theta(x, z_k) - \log q_\phi(z_k|x)`,

.. math::

    \hat{\mathcal L}_K = \log \frac1K \sum_k e^{\ell_k}, \qquad
    \hat{\mathcal L}_K^{-k} = \log \frac1K \Big(\sum_{j \ne k} e^{\ell_j}
        + e^{\frac{1}{K-1}\sum_{j\ne k} \ell_j}\Big)

(the k-th weight replaced by the geometric mean of the others), and the gradient estimate

.. math::

    \nabla \hat{\mathcal L}_K \big|_{z\ \mathrm{fixed}}
    + \sum_k \big(\hat{\mathcal L}_K - \hat{\mathcal L}_K^{-k}\big)
      \nabla_\phi \log q_\phi(z_k | x),

an unbiased estimate of :math:`\nabla\,\mathbb E[\hat{\mathcal L}_K]`: the leave-one-out
control variate :math:`\hat{\mathcal L}_K^{-k}` does not depend on :math:`z_k`. It is the
surrogate :math:`\hat{\mathcal L}_K + \sum_k \mathrm{stop}(\hat{\mathcal L}_K -
\hat{\mathcal L}_K^{-k}) \log q(z_k|x)`, summed over data points; the minibatch scale N/B
multiplies it after the log-sum-exp (as :class:`~pyro_vae.objectives.IWAE_ELBO`). Only the
non-reparameterizable guide sites get score terms; reparameterizable ones get pathwise
gradients through :math:`\ell_k`. Pyro's ``RenyiELBO(alpha=0)`` gives such guides no
gradient at all.

A. Mnih, D. J. Rezende. Variational inference for Monte Carlo objectives. ICML 2016.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.estimators.base import MultiSampleELBO
from pyro_vae.estimators.traces import importance_traces, point_log_probs


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat{\mathcal L}_K^{-k}` for each k (dim 0), from log weights ``(K, ...)``."""
    k = log_w.shape[0]
    geo_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
    replaced = log_w.unsqueeze(0).expand(k, *log_w.shape).clone()
    idx = torch.arange(k, device=log_w.device)
    replaced[idx, idx] = geo_mean
    return torch.logsumexp(replaced, dim=1) - math.log(k)


class VIMCO_ELBO(MultiSampleELBO):
    """VIMCO with K vectorized particles; see the module docstring."""

    objective_name = "vimco"

    def _bound_and_surrogate(self, model, guide, args, kwargs):
        model_trace, guide_trace = importance_traces(self, model, guide, args, kwargs)
        lp = point_log_probs(model_trace, guide_trace)
        log_w = lp.log_w
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        signal = (bound.detach() - leave_one_out_bounds(log_w.detach()))
        surrogate = bound + (signal * lp.log_q_score).sum(0)
        return lp.data_scale * bound.sum(), lp.data_scale * surrogate.sum()
