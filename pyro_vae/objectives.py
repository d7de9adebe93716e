"""Objectives by name: Pyro ELBOs, and our own where Pyro lacks one.

===============  ==========================================================================
``trace``        :class:`pyro.infer.Trace_ELBO` -- Monte Carlo ELBO, pathwise gradients where
                 sites are reparameterizable, score-function terms otherwise.
``meanfield``    :class:`pyro.infer.TraceMeanField_ELBO` -- the KL(q || p) term analytically.
``iwae``         :class:`~pyro_vae.estimators.iwae.IWAE_ELBO` -- the importance-weighted bound L_K (Burda et al. 2016).
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

from collections.abc import Callable

from pyro import infer
from pyro.infer.elbo import ELBO

from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.dreg import DReG_IWAE_ELBO
from pyro_vae.estimators.iwae import IWAE_ELBO
from pyro_vae.estimators.rws import RWS_ELBO
from pyro_vae.estimators.vimco import VIMCO_ELBO

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
