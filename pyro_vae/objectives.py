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
from pyro.infer.util import get_dependent_plate_dims, torch_sum
from pyro.util import warn_if_nan

from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.dreg import DReG_IWAE_ELBO
from pyro_vae.estimators.rws import RWS_ELBO
from pyro_vae.estimators.vimco import VIMCO_ELBO


class IWAE_ELBO(ELBO):
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

    def __init__(self, num_particles: int = 5, max_plate_nesting: float = float("inf"),
                 vectorize_particles: bool = True, strict_enumeration_warning: bool = True):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=vectorize_particles,
                         strict_enumeration_warning=strict_enumeration_warning)

    def _get_trace(self, model, guide, args, kwargs):
        from pyro.infer.enum import get_importance_trace

        model_trace, guide_trace = get_importance_trace("flat", self.max_plate_nesting, model,
                                                        guide, args, kwargs)
        for name, site in guide_trace.nodes.items():  # checked always: a wrong gradient is silent
            if site["type"] == "sample" and not site["fn"].has_rsample:
                raise ConfigError(f"the iwae objective needs reparameterizable latents, but "
                                  f"site {name!r} is not (discrete latents need a "
                                  "score-function estimator)")
        return model_trace, guide_trace

    def _bound(self, model, guide, args, kwargs) -> torch.Tensor:
        """The bound's estimate summed over (scaled) data points, as a differentiable scalar."""
        pieces = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sites = [s for t in (model_trace, guide_trace) for s in t.nodes.values()
                     if s["type"] == "sample"]
            sum_dims = get_dependent_plate_dims(sites)
            shared = set(sites[0]["cond_indep_stack"]).intersection(
                *(s["cond_indep_stack"] for s in sites))
            data_scale = math.prod(f.full_size / f.size for f in shared
                                   if f.full_size is not None and f.vectorized)
            log_w = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_w = log_w + torch_sum(site["log_prob"], sum_dims)
            for site in guide_trace.nodes.values():
                if site["type"] == "sample":
                    log_w = log_w - torch_sum(site["log_prob"], sum_dims)
            pieces.append(log_w / data_scale)
        if self.vectorize_particles:
            log_w = pieces[0]
            if self.num_particles == 1:
                log_w = log_w.unsqueeze(0) if torch.is_tensor(log_w) else torch.tensor([log_w])
        else:
            log_w = torch.stack(pieces)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return data_scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            loss = -self._bound(model, guide, args, kwargs).item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = -self._bound(model, guide, args, kwargs)
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


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
