"""The objective registry: every training objective once, with what it can and cannot do.

===============  ==========================================================================
``trace``        :class:`pyro.infer.Trace_ELBO` -- Monte Carlo ELBO, pathwise gradients where
                 sites are reparameterizable, score-function terms otherwise.
``meanfield``    :class:`pyro.infer.TraceMeanField_ELBO` -- the KL(q || p) term analytically.
``iwae``         :class:`~pyro_vae.estimators.iwae.IWAE_ELBO` -- the importance-weighted
                 bound L_K (Burda et al. 2016).
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

Each entry of :data:`OBJECTIVES` is an :class:`ObjectiveSpec`: the class, its jit variant, and
its capabilities (multi-sample, free bits, the fast engine, discrete latents, the options only
it reads). Everything else reads them: :class:`~pyro_vae.train.TrainConfig` checks a
configuration with :func:`check_config`, ``train`` checks a model with :func:`check_model` and
builds the objective with :func:`build_objective`, the fast engine reads ``fast_engine``, the
CLI prints :func:`describe`. Adding an objective: one file under ``pyro_vae/estimators/`` (an
ELBO subclass) and one :class:`ObjectiveSpec` line here.

Particles are vectorized (one batched trace holds all K samples) rather than looped over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from pyro import infer
from pyro.infer.elbo import ELBO

from pyro_vae.annealing import FreeBitsELBO
from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.baselines import optim_args as baseline_optim_args
from pyro_vae.estimators.dreg import DReG_IWAE_ELBO
from pyro_vae.estimators.iwae import IWAE_ELBO
from pyro_vae.estimators.rws import RWS_ELBO
from pyro_vae.estimators.vimco import VIMCO_ELBO


@dataclass(frozen=True)
class ObjectiveSpec:
    """One training objective and its capabilities.

    * ``cls`` / ``jit_cls``: the ELBO classes (``jit_cls`` None: no ``--jit`` variant);
    * ``multi_sample``: K is the bound's K (particles always vectorized, log-sum-exp per point);
    * ``min_particles``: the smallest K it accepts;
    * ``free_bits``: how free bits take its KL per dimension (``"sampled"``, ``"analytic"``),
      or None when free bits do not combine with it;
    * ``fast_engine``: the fast step engine serves it (else Pyro's SVI object runs it);
    * ``discrete_latents``: it trains guides with non-reparameterizable sites;
    * ``options``: the :class:`~pyro_vae.train.TrainConfig` fields only it reads;
      ``init_options`` those of them its constructor takes (the rest, e.g. a baseline's
      learning rate, go to ``optim_args``);
    * ``optim_args(config)``: Adam settings for SVI (e.g. a baseline's own learning rate).
    """

    name: str
    cls: Callable[..., ELBO]
    summary: str
    jit_cls: Callable[..., ELBO] | None = None
    multi_sample: bool = False
    min_particles: int = 1
    free_bits: str | None = None
    fast_engine: bool = True
    discrete_latents: bool = True
    options: tuple[str, ...] = ()
    init_options: tuple[str, ...] = ()
    optim_args: Callable[[Any], dict | Callable] = (
        lambda config: {"lr": config.lr, "eps": config.adam_eps})


def _tracegraph_optim_args(config) -> dict | Callable:
    neural = config.baseline == "neural"
    return baseline_optim_args(config.lr, config.adam_eps, config.baseline_lr if neural else None)


OBJECTIVES: dict[str, ObjectiveSpec] = {spec.name: spec for spec in (
    ObjectiveSpec("trace", infer.Trace_ELBO, "Monte Carlo ELBO (pathwise, or score function "
                  "for discrete sites)", jit_cls=infer.JitTrace_ELBO, free_bits="sampled"),
    ObjectiveSpec("meanfield", infer.TraceMeanField_ELBO, "ELBO with the KL term in closed form",
                  jit_cls=infer.JitTraceMeanField_ELBO, free_bits="analytic",
                  discrete_latents=False),
    ObjectiveSpec("iwae", IWAE_ELBO, "importance-weighted bound L_K", multi_sample=True,
                  discrete_latents=False),
    ObjectiveSpec("tracegraph", TraceGraphBaselineELBO, "score-function ELBO with a baseline",
                  fast_engine=False, options=("baseline", "baseline_lr"),
                  init_options=("baseline",),
                  optim_args=_tracegraph_optim_args),
    ObjectiveSpec("rws", RWS_ELBO, "reweighted wake-sleep, K particles", multi_sample=True,
                  min_particles=2),
    ObjectiveSpec("vimco", VIMCO_ELBO, "L_K by VIMCO's multi-sample score function",
                  multi_sample=True, min_particles=2),
    ObjectiveSpec("iwae-dreg", DReG_IWAE_ELBO, "L_K with doubly reparameterized gradients",
                  multi_sample=True, min_particles=2, discrete_latents=False),
    ObjectiveSpec("enum", infer.TraceEnum_ELBO, "discrete sites summed out exactly",
                  jit_cls=infer.JitTraceEnum_ELBO),
)}


def get_spec(name: str) -> ObjectiveSpec:
    check_choice("objective", name, OBJECTIVES)
    return OBJECTIVES[name]


def _where(test: Callable[[ObjectiveSpec], bool]) -> str:
    """The names of the objectives that pass ``test``: "a", "a and b", "a, b and c"."""
    names = [n for n, s in OBJECTIVES.items() if test(s)]
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def describe() -> list[str]:
    """One line per objective for ``pyro-vae list`` and the CLI help."""
    lines = []
    for spec in OBJECTIVES.values():
        can = [word for word, ok in (("multi-sample", spec.multi_sample),
                                     ("discrete latents", spec.discrete_latents),
                                     ("free bits", spec.free_bits is not None),
                                     ("jit", spec.jit_cls is not None),
                                     ("fast engine", spec.fast_engine)) if ok]
        lines.append(f"{spec.name:<11} {spec.summary} [{', '.join(can)}]")
    return lines


def check_config(config) -> None:
    """Raise :class:`ConfigError` for settings the configured objective cannot serve."""
    spec = get_spec(config.objective)
    if config.num_particles < spec.min_particles:
        raise ConfigError(f"the {spec.name} objective needs --num-particles >= "
                          f"{spec.min_particles}, got {config.num_particles}")
    defaults = {f.name: f.default for f in fields(config)}
    for other in OBJECTIVES.values():
        for option in other.options:
            value = getattr(config, option)
            if option not in spec.options and value != defaults[option]:
                flag = option.replace("_", "-")
                raise ConfigError(f"--{flag} {value} applies to the "
                                  f"{_where(lambda s, o=option: o in s.options)} objective "
                                  f"only, not {spec.name}")
    if config.jit and spec.jit_cls is None:
        raise ConfigError(f"objective {spec.name} has no jit variant; drop --jit")
    if config.free_bits > 0:
        if spec.free_bits is None:
            raise ConfigError(f"--free-bits works with the "
                              f"{_where(lambda s: s.free_bits is not None)} objectives, not "
                              f"{spec.name}")
        if config.jit:
            raise ConfigError("--free-bits has no jit variant; drop --jit")
    if config.jit and (config.kl_warmup_epochs or config.beta != 1.0):
        raise ConfigError("a KL weight other than 1 (--beta, --kl-warmup-epochs) needs the "
                          "plain objective; drop --jit")
    if config.lr_schedule != "constant" and (config.engine != "fast" or config.jit
                                             or not spec.fast_engine):
        raise ConfigError(f"--lr-schedule {config.lr_schedule} needs the fast engine, which "
                          f"serves the {_where(lambda s: s.fast_engine)} objectives without "
                          "--jit")


def check_model(config, model_cls) -> None:
    """Raise :class:`ConfigError` if the objective cannot train ``model_cls`` (a class or an
    instance; only its capability attributes are read)."""
    spec = get_spec(config.objective)
    name = getattr(model_cls, "name", type(model_cls).__name__)
    if getattr(model_cls, "has_discrete_latents", False):
        if not spec.discrete_latents:
            raise ConfigError(f"the {spec.name} objective needs reparameterizable latents; "
                              f"model {name} has discrete ones: use one of "
                              f"{_where(lambda s: s.discrete_latents)}")
        if config.free_bits > 0:
            raise ConfigError(f"--free-bits needs continuous latents; model {name} has "
                              "discrete ones")


def build_objective(config, model) -> ELBO:
    """The ELBO ``config`` asks for, for ``model`` (free bits wrap the trace/meanfield KL)."""
    spec = get_spec(config.objective)
    check_config(config)
    check_model(config, model)
    if config.free_bits > 0:
        vectorize = config.num_particles > 1
        elbo = FreeBitsELBO(config.free_bits, model.latent_sites,
                            analytic=spec.free_bits == "analytic",
                            num_particles=config.num_particles, vectorize_particles=vectorize,
                            max_plate_nesting=model.max_plate_nesting + (1 if vectorize else 0))
        elbo.fast_engine = spec.fast_engine
        return elbo
    return make_objective(config.objective, config.num_particles,
                          max_plate_nesting=model.max_plate_nesting, jit=config.jit,
                          **{k: getattr(config, k) for k in spec.init_options})


def make_objective(name: str, num_particles: int = 1, *, max_plate_nesting: int = 1,
                   jit: bool = False, **options: Any) -> ELBO:
    """An ELBO by name with ``num_particles`` vectorized particles.

    ``max_plate_nesting`` is the model's own (``LatentModel.max_plate_nesting``); one more dim
    is added on the left for the particles. ``options`` are the objective's own (e.g.
    ``baseline=none|decaying|neural`` for ``tracegraph``). The instance's ``fast_engine``
    attribute tells :func:`pyro_vae.engine.make_stepper` whether the fast path serves it.
    """
    spec = get_spec(name)
    check_positive("num_particles", num_particles)
    if jit and spec.jit_cls is None:
        raise ConfigError(f"objective {name} has no jit variant; drop --jit")
    unknown = sorted(set(options) - set(spec.init_options))
    if unknown:
        raise ConfigError(f"objective {name} takes no option {unknown[0]!r}"
                          + (f"; its options: {', '.join(spec.init_options)}"
                             if spec.init_options else ""))
    cls = spec.jit_cls if jit else spec.cls
    vectorize = num_particles > 1 or spec.multi_sample
    nesting = max_plate_nesting + (1 if vectorize and num_particles > 1 else 0)
    kwargs = dict(num_particles=num_particles, max_plate_nesting=nesting,
                  vectorize_particles=vectorize, **options)
    if jit:
        kwargs["ignore_jit_warnings"] = True
    elbo = cls(**kwargs)
    elbo.fast_engine = spec.fast_engine and not jit
    return elbo


__all__ = ["IWAE_ELBO", "OBJECTIVES", "ObjectiveSpec", "build_objective",
           "check_config", "check_model", "describe", "get_spec", "make_objective"]
