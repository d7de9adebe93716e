"""Checks to run on a new model/guide pair before training it.

    from pyro_vae.testing import check_model_guide
    problems = check_model_guide(MyModel(config, data_shape), x)   # [] when all is well

Each failure is one sentence that names the site or parameter and what is wrong. The checks
(the contract of :mod:`pyro_vae.models.base`):

1. ``model(x, y)`` and ``guide(x, y)`` run; if either raises, the exception is reported and the
   checks that need its trace are skipped;
2. sites: the observed site ``module.observed_site`` exists, is observed and observes ``x``;
   the guide samples every latent site of the model and nothing else; the declared
   ``latent_sites`` are the model's latent sites;
3. shapes: with the model replayed on the guide's samples, each guide sample has the shape of
   the model's distribution at that site (``fn.shape()``), with as many event dims;
4. supports: the guide's sample lies in the model's support, with the same discreteness and
   support event dim;
5. plates: each latent site sits in the same plates (name, dim, size) in both programs; every
   model site sits in the ``"data"`` plate of ``len(x)`` points; no site has more batch dims
   than ``max_plate_nesting``; with ``num_data`` given, sites in the data plate are scaled by
   ``num_data / len(x)`` (only when the programs take ``num_data``);
6. the ELBO (``Trace_ELBO``, one particle) is finite; if not, the sites whose log density is
   not finite are named;
7. every parameter of the module is registered with Pyro (``pyro.module``) and gets a finite
   gradient from the ELBO.

Checks 6 and 7 run only when 1-5 pass: a loss of a pair whose sites disagree says nothing new.

The check leaves no trace: the Pyro param store is cleared before and after, gradients are
``None`` before and after, module buffers (e.g. batch-norm statistics) and the RNG states of
torch (CPU, and the CUDA device of ``x``), NumPy and Python are restored, so a seeded training
run that follows gives the same result as without the check.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state

Site = dict[str, Any]
NUM_DATA_FACTOR = 3  # the scaling check calls the programs with num_data = 3 * len(x)


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _samples(trace: Trace) -> dict[str, Site]:
    return {name: s for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)}


def _plates(site: Site) -> set[tuple]:
    return {(f.name, f.dim, f.size) for f in site["cond_indep_stack"]}


def _run(fn: Callable, x: torch.Tensor, y: torch.Tensor | None, replay: Trace | None = None,
         **kwargs: Any) -> tuple[Trace, BaseException | None]:
    """Trace ``fn(x, y, **kwargs)``; on an exception return the partial trace and the error."""
    tracer = poutine.trace()
    try:
        with tracer:
            (poutine.replay(fn, trace=replay) if replay is not None else fn)(x, y, **kwargs)
    except Exception as exc:
        return tracer.trace, exc
    return tracer.trace, None


def _raised(program: str, exc: BaseException, partial: Trace, when: str = "") -> str:
    sites = list(_samples(partial))
    after = f" (after sample site {sites[-1]!r})" if sites else ""
    return f"the {program} raised {_describe(exc)}{when}{after}"


def _check_sites(module: Any, model_sites: dict[str, Site], guide_sites: dict[str, Site],
                 x: torch.Tensor) -> list[str]:
    """Check 2: observed site, latent sites of model and guide, declared latent sites."""
    problems = []
    obs_name = getattr(module, "observed_site", None)
    observed = {n for n, s in model_sites.items() if s["is_observed"] or n == obs_name}
    latent = set(model_sites) - observed
    if obs_name is not None:
        site = model_sites.get(obs_name)
        if site is None:
            problems.append(f"the model has no sample site {obs_name!r} (its observed_site)")
        elif not site["is_observed"]:
            problems.append(f"model site {obs_name!r} is not observed: pass obs=x")
        elif site["value"] is not x and not (site["value"].shape == x.shape
                                             and torch.equal(site["value"], x)):
            problems.append(f"model site {obs_name!r} observes something other than x")
    for name in sorted(latent - set(guide_sites)):
        problems.append(f"latent site {name!r} of the model is not sampled by the guide")
    for name in sorted(set(guide_sites) - latent):
        where = "is observed in the model" if name in observed else "is not in the model"
        problems.append(f"guide site {name!r} {where}")
    declared = getattr(module, "latent_sites", None)
    if declared is not None and set(declared) != latent:
        problems.append(f"latent_sites declares {sorted(declared)} but the model's latent "
                        f"sites are {sorted(latent)}")
    return problems


def _check_latent(name: str, p_site: Site, q_site: Site) -> list[str]:
    """Checks 3-5 for one latent site: shape, event dims, support, plates."""
    problems = []
    p, q, value = p_site["fn"], q_site["fn"], q_site["value"]
    if tuple(value.shape) != tuple(p.shape()):
        problems.append(f"site {name!r}: the guide samples shape {tuple(value.shape)} but the "
                        f"model expects {tuple(p.shape())}")
    elif len(q.event_shape) != len(p.event_shape):
        problems.append(f"site {name!r}: the guide has event shape {tuple(q.event_shape)}, the "
                        f"model {tuple(p.event_shape)} (match them with .to_event)")
    else:
        try:
            p_discrete, q_discrete = p.support.is_discrete, q.support.is_discrete
            same_event_dim = p.support.event_dim == q.support.event_dim
            inside = bool(p.support.check(value).all())
        except (NotImplementedError, ValueError):  # a dependent support: nothing to compare
            p_discrete = q_discrete = inside = same_event_dim = True
        kinds = {True: "discrete", False: "continuous"}
        if p_discrete != q_discrete:
            problems.append(f"site {name!r}: the model's distribution is {kinds[p_discrete]} "
                            f"but the guide's is {kinds[q_discrete]}")
        elif not same_event_dim:
            problems.append(f"site {name!r}: the supports have event dim "
                            f"{p.support.event_dim} (model) and {q.support.event_dim} (guide)")
        elif not inside:
            problems.append(f"site {name!r}: the guide's sample lies outside the model's "
                            f"support ({p.support})")
    if _plates(p_site) != _plates(q_site):
        problems.append(f"site {name!r}: plates differ, model {sorted(_plates(p_site))} vs "
                        f"guide {sorted(_plates(q_site))}")
    return problems


def _check_plates(module: Any, traces: dict[str, Trace], x: torch.Tensor) -> list[str]:
    """Check 5: every model site in the data plate; batch dims within max_plate_nesting."""
    problems = []
    for name, site in _samples(traces["model"]).items():
        frames = {f.name: f for f in site["cond_indep_stack"]}
        if "data" not in frames:
            problems.append(f"model site {name!r} is outside the 'data' plate; put it inside "
                            "self.data_plate(x, num_data) (the per-data-point bounds of "
                            "pyro_vae.evaluate need every site in it)")
        elif frames["data"].size != len(x):
            problems.append(f"model site {name!r}: the 'data' plate has size "
                            f"{frames['data'].size} but x has {len(x)} points")
    nesting = getattr(module, "max_plate_nesting", None)
    for program, trace in traces.items() if nesting is not None else ():
        for name, site in _samples(trace).items():
            batch = tuple(site["fn"].batch_shape)
            if len(batch) > nesting:
                problems.append(f"{program} site {name!r} has batch shape {batch}, more dims "
                                f"than max_plate_nesting = {nesting} (declare event dims with "
                                ".to_event or raise max_plate_nesting)")
    return problems


def _check_scaling(module: Any, x: torch.Tensor, y: torch.Tensor | None,
                   traces: dict[str, Trace]) -> list[str]:
    """Check 5: with ``num_data`` given, data-plate sites are scaled by num_data / len(x)."""
    try:
        takes = all("num_data" in inspect.signature(f).parameters
                    for f in (module.model, module.guide))
    except (TypeError, ValueError):
        takes = False
    if not takes:
        return []
    num_data = NUM_DATA_FACTOR * len(x)
    guide_trace, exc = _run(module.guide, x, y, num_data=num_data)
    if exc is not None:
        return [_raised("guide", exc, guide_trace, f" with num_data={num_data}")]
    model_trace, exc = _run(module.model, x, y, replay=guide_trace, num_data=num_data)
    if exc is not None:
        return [_raised("model", exc, model_trace, f" with num_data={num_data}")]
    problems = []
    for program, trace in (("model", model_trace), ("guide", guide_trace)):
        unscaled = _samples(traces[program])
        for name, site in _samples(trace).items():
            in_data = any(f.name == "data" for f in site["cond_indep_stack"])
            if not in_data or name not in unscaled:
                continue
            want = NUM_DATA_FACTOR * torch.as_tensor(unscaled[name]["scale"], dtype=torch.float64)
            got = torch.as_tensor(site["scale"], dtype=torch.float64)
            if got.shape != want.shape or not torch.allclose(got, want):
                problems.append(f"{program} site {name!r} is not scaled by num_data / len(x) "
                                f"when num_data={num_data} is given: make the data plate with "
                                "self.data_plate(x, num_data)")
    return problems


def _nonfinite_sites(traces: dict[str, Trace]) -> list[str]:
    names = []
    for program, trace in traces.items():
        for name, site in _samples(trace).items():
            with contextlib.suppress(Exception):
                if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                    names.append(f"{program} site {name!r}")
    return names


def _check_elbo_and_gradients(module: Any, x: torch.Tensor, y: torch.Tensor | None,
                              traces: dict[str, Trace]) -> list[str]:
    """Checks 6 and 7: a finite ELBO, every parameter registered with a finite gradient."""
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad] \
        if hasattr(module, "named_parameters") else []
    elbo = Trace_ELBO(max_plate_nesting=getattr(module, "max_plate_nesting", math.inf))
    try:
        loss = elbo.differentiable_loss(module.model, module.guide, x, y)
    except Exception as exc:
        return [f"the ELBO could not be computed ({_describe(exc)})"]
    if not torch.isfinite(loss):
        bad = _nonfinite_sites(traces)
        where = f": the log density of {', '.join(bad)} is not finite" if bad else ""
        return [f"the ELBO is not finite ({-loss.item()}){where}"]
    registered = {id(v) for _, v in pyro.get_param_store().named_parameters()}
    loss.backward()
    faults = {
        "are not registered with Pyro, so SVI would not train them: call "
        "pyro.module(self.name, self) in model and guide": [
            n for n, p in params if id(p) not in registered],
        "get no gradient from the ELBO (unused, or used outside model and guide)": [
            n for n, p in params if p.grad is None],
        "get a NaN or infinite gradient from the ELBO": [
            n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()],
    }
    return [f"parameter(s) {', '.join(map(repr, names))} {what}"
            for what, names in faults.items() if names]


@contextlib.contextmanager
def _no_side_effects(module: Any, x: torch.Tensor) -> Iterator[None]:
    """Clear the param store and gradients; restore RNG states and buffers afterwards."""
    params = list(module.parameters()) if hasattr(module, "parameters") else []
    buffers = [(b, b.clone()) for b in module.buffers()] if hasattr(module, "buffers") else []
    rng = get_rng_state()
    cuda = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
    pyro.clear_param_store()
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        pyro.clear_param_store()
        for p in params:
            p.grad = None
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        set_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, x.device)


def check_model_guide(module: Any, x: torch.Tensor,
                      y: torch.Tensor | None = None) -> list[str]:
    """Run the checks of this module's docstring on ``module``; return the failures.

    ``module`` is a :class:`~pyro_vae.models.LatentModel` or anything with ``model(x, y)`` and
    ``guide(x, y)`` (``observed_site``, ``latent_sites`` and ``max_plate_nesting`` are read when
    present). ``x`` is a small batch of data the model accepts, ``y`` its labels if the model
    is conditional. An empty list means every check passed.
    """
    with _no_side_effects(module, x), pyro.validation_enabled(True), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")  # reported below instead
        guide_trace, guide_exc = _run(module.guide, x, y)
        model_trace, model_exc = _run(module.model, x, y)
        problems = [_raised(program, exc, trace) for program, exc, trace in (
            ("guide", guide_exc, guide_trace), ("model", model_exc, model_trace)) if exc]
        if problems:
            return problems
        replayed, replay_exc = _run(module.model, x, y, replay=guide_trace)
        traces = {"model": model_trace if replay_exc else replayed, "guide": guide_trace}
        model_sites, guide_sites = _samples(traces["model"]), _samples(guide_trace)
        problems = _check_sites(module, model_sites, guide_sites, x)
        replayed_sites = _samples(replayed)
        for name in sorted(set(replayed_sites) & set(guide_sites)):
            if not replayed_sites[name]["is_observed"]:
                problems += _check_latent(name, replayed_sites[name], guide_sites[name])
        if replay_exc is not None:
            problems.append(_raised("model", replay_exc, replayed,
                                    " when replayed on the guide's samples"))
        problems += _check_plates(module, traces, x)
        if not problems:
            problems += _check_scaling(module, x, y, traces)
        if not problems:
            problems += _check_elbo_and_gradients(module, x, y, traces)
        return problems


def assert_model_guide(module: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Raise ``AssertionError`` listing every failure of :func:`check_model_guide`, one a line."""
    problems = check_model_guide(module, x, y)
    if problems:
        raise AssertionError(f"{type(module).__name__} fails {len(problems)} model/guide "
                             "check(s):\n" + "\n".join(f"- {p}" for p in problems))


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module, rtol: float = 0.0,
                           atol: float = 0.0) -> None:
    """Assert that two modules hold the same tensors, name by name: exactly equal by default
    (a resumed run against an uninterrupted one), or ``torch.allclose`` within tolerances."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb), f"different parameter names: {list(sa)} and {list(sb)}"
    for name, x in sa.items():
        y = sb[name]
        same = torch.equal(x, y) if rtol == atol == 0 else (
            x.shape == y.shape and torch.allclose(x, y, rtol=rtol, atol=atol))
        assert same, name


__all__ = ["assert_model_guide", "assert_same_parameters", "check_model_guide"]
