"""Objectives by name: Pyro ELBOs, and our own where Pyro lacks one.

===============  ==========================================================================
``trace``        :class:`pyro.infer.Trace_ELBO` -- Monte Carlo ELBO, pathwise gradients where
                 sites are reparameterizable, score-function terms otherwise.
``meanfield``    :class:`pyro.infer.TraceMeanField_ELBO` -- the KL(q || p) term analytically.
``iwae``         :class:`IWAE_ELBO` -- the importance-weighted bound L_K (Burda et al. 2016).
``tracegraph``   :class:`~pyro_vae.estimators.baselines.TraceGraphBaselineELBO` -- Pyro's
                 ``TraceGraph_ELBO`` with a baseline by name (``baseline=none|decaying|neural``).
``rws``          :class:`~pyro_vae.estimators.rws.RWS_ELBO` -- reweighted wake-sleep, K particles.
``vimco``        :class:`~pyro_vae.estimators.vimco.VIMCO_ELBO` -- L_K, multi-sample score
                 function with leave-one-out control variates (Mnih & Rezende 2016).
``iwae-dreg``    :class:`~pyro_vae.estimators.dreg.DReG_IWAE_ELBO` -- L_K with doubly
                 reparameterized guide gradients (Tucker et al. 2019).
``enum``         :class:`pyro.infer.TraceEnum_ELBO` -- sums out discrete sites marked for
                 parallel enumeration (``config_enumerate``) exactly, e.g. a mixture's
                 assignment, so a mixture trains on its exact marginal likelihood.
===============  ==========================================================================

``trace`` and ``meanfield`` have jit variants (``jit=True``: ``JitTrace_ELBO``,
``JitTraceMeanField_ELBO``); Pyro has no jit IWAE. Particles are vectorized (one batched
trace holds all K samples) rather than looped over.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pyro import infer
from pyro.infer.elbo import ELBO

from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.estimators.base import MultiSampleELBO
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.dreg import DReG_IWAE_ELBO
from pyro_vae.estimators.rws import RWS_ELBO
from pyro_vae.estimators.traces import check_reparameterized, point_log_probs
from pyro_vae.estimators.vimco import VIMCO_ELBO


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
        if self.vectorize_particles:
            log_w = pieces[0] if self.num_particles > 1 else pieces[0].unsqueeze(0)
        else:
            log_w = torch.stack(pieces)
        bound = data_scale * (torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)).sum()
        return bound, bound


OBJECTIVES: dict[str, tuple[Callable[..., ELBO], Callable[..., ELBO] | None]] = {
    "trace": (infer.Trace_ELBO, infer.JitTrace_ELBO),
    "meanfield": (infer.TraceMeanField_ELBO, infer.JitTraceMeanField_ELBO),
    "iwae": (IWAE_ELBO, None),
    "tracegraph": (TraceGraphBaselineELBO, None),
    "rws": (RWS_ELBO, None),
    "vimco": (VIMCO_ELBO, None),
    "iwae-dreg": (DReG_IWAE_ELBO, None),
    "enum": (infer.TraceEnum_ELBO, infer.JitTraceEnum_ELBO),
}
MULTI_SAMPLE = ("iwae", "rws", "vimco", "iwae-dreg")  # K is the bound's K, always vectorized


def make_objective(name: str, num_particles: int = 1, *, max_plate_nesting: int = 1,
                   jit: bool = False, baseline: str = "none") -> ELBO:
    """An ELBO by name with ``num_particles`` vectorized particles.

    ``max_plate_nesting`` is the model's own (``LatentModel.max_plate_nesting``); one more dim
    is added on the left for the particles. ``baseline`` (none, decaying, neural) is for
    ``tracegraph`` only.
    """
    check_choice("objective", name, OBJECTIVES)
    check_positive("num_particles", num_particles)
    plain, jitted = OBJECTIVES[name]
    if jit and jitted is None:
        raise ConfigError(f"objective {name} has no jit variant; drop --jit")
    cls = jitted if jit else plain
    vectorize = num_particles > 1 or name in MULTI_SAMPLE
    nesting = max_plate_nesting + (1 if vectorize and num_particles > 1 else 0)
    kwargs = dict(num_particles=num_particles, max_plate_nesting=nesting,
                  vectorize_particles=vectorize)
    if jit:
        kwargs["ignore_jit_warnings"] = True
    if name == "tracegraph":
        kwargs["baseline"] = baseline
    elif baseline != "none":
        raise ConfigError(f"a baseline ({baseline}) applies to the tracegraph objective only, "
                          f"not {name}")
    return cls(**kwargs)
