r"""Reweighted wake-sleep, per data point (Bornschein & Bengio 2015; Le et al. 2019).

With K guide samples per data point and normalized weights :math:`\tilde w_k \propto
p_\theta(x, z_k) / q_\phi(z_k|x)`:

* wake-theta: :math:`\sum_k \tilde w_k \nabla_\theta \log p_\theta(x, z_k)`, an unbiased
  estimate of :math:`\nabla_\theta \mathcal L_K` (the IWAE bound's model gradient);
* wake-phi: :math:`\sum_k \tilde w_k \nabla_\phi \log q_\phi(z_k|x)`, a self-normalized
  (consistent as K grows, biased for finite K) estimate of
  :math:`\mathbb E_{p(z|x)}[\nabla_\phi \log q_\phi(z|x)] = -\nabla_\phi
  \mathrm{KL}(p_\theta(z|x) \,\|\, q_\phi(z|x))`.

Both need no reparameterization, so RWS trains discrete guides. This is Pyro's
``ReweightedWakeSleep`` with ``insomnia=1`` (wake-phi only) except that the weights are
normalized over the particles of each data point, with the minibatch scale outside the
log-sum-exp; Pyro's class sums each particle's log weight over the whole minibatch before
normalizing, which for B points makes one particle take nearly all the weight. The loss
reported is minus the IWAE bound L_K.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.estimators.base import MultiSampleELBO
from pyro_vae.estimators.traces import importance_traces, point_log_probs, replay_detached


class RWS_ELBO(MultiSampleELBO):
    """Wake-theta + wake-phi, per data point; see the module docstring."""

    objective_name = "rws"

    def _bound_and_surrogate(self, model, guide, args, kwargs):
        model_trace, guide_trace = importance_traces(self, model, guide, args, kwargs)
        lp = point_log_probs(model_trace, guide_trace)
        log_w = lp.log_w.detach()
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        w = torch.softmax(log_w, dim=0)
        log_p, log_q = lp.log_p, lp.log_q
        if any(s["fn"].has_rsample for s in guide_trace.nodes.values()
               if s["type"] == "sample"):  # no gradient along the samples' paths
            model_trace = replay_detached(self, model, guide_trace, args, kwargs)
            log_p = point_log_probs(model_trace, guide_trace).log_p
            log_q = point_log_probs(model_trace, guide_trace, detach_guide_values=True).log_q
        surrogate = (w * (log_p + log_q)).sum(0)
        return lp.data_scale * bound.sum(), lp.data_scale * surrogate.sum()
