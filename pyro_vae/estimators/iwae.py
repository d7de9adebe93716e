r"""The importance-weighted bound L_K (Burda, Grosse & Salakhutdinov 2016) as a Pyro ELBO.

Y. Burda, R. Grosse, R. Salakhutdinov. Importance weighted autoencoders. ICLR 2016.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.estimators.base import MultiSampleELBO
from pyro_vae.estimators.traces import check_reparameterized, point_log_probs


class IWAE_ELBO(MultiSampleELBO):
    r"""The importance-weighted bound of Burda, Grosse & Salakhutdinov (2016), per data point.

    .. math::

        \mathcal{L}_K(x) = \mathbb{E}_{z_{1..K} \sim q(z|x)}
            \Big[\log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k | x)}\Big],
        \qquad \mathcal{L}_1 \le \mathcal{L}_K \le \mathcal{L}_{K+1} \le \log p(x).

    The K particles are one vectorized trace; the log-sum-exp runs over particles separately
    for each data point (every plate shared by all sample sites, normally ``"data"``), and the
    result is summed over data points. Gradients are pathwise, so every latent site of the
    guide must be reparameterizable.

    Why not ``RenyiELBO(alpha=0)``: it applies the minibatch scale ``N/B`` of a subsampled
    plate *inside* the log-sum-exp (``log sum_k exp(N/B * w_k)``), which is not ``N/B`` times
    the per-point bound. Here the subsample scale is taken out before the log-sum-exp and put
    back after, so a minibatch gives an unbiased estimate of ``sum_n L_K(x_n)``. Other
    scales (``poutine.scale``, e.g. beta) stay inside the weights.
    """

    objective_name = "iwae"
    min_particles = 1

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf"),
                 vectorize_particles: bool = True, strict_enumeration_warning: bool = True):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        check_reparameterized(self.objective_name, guide_trace)  # a wrong gradient is silent
        return model_trace, guide_trace

    def _bound_and_surrogate(self, model, guide, args, kwargs):
        """The bound's estimate summed over (scaled) data points; it is its own surrogate."""
        pieces, data_scale = [], 1.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            lp = point_log_probs(model_trace, guide_trace)
            pieces.append(lp.log_w)
            data_scale = lp.data_scale
        log_w = torch.cat(pieces)  # (K, N): one vectorized piece, or K pieces of (1, N)
        bound = data_scale * (torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum()
        return bound, bound
