"""Checks to run on a new model/guide pair before training it.

    from pyro_vae.testing import check_model_guide
    problems = check_model_guide(MyModel(config, data_shape), x)   # [] when all is well

Each failure is one sentence that names the site or parameter and what is wrong, and the file
and line of the user's code where an exception was raised. One call reports every problem it
can find. The checks (the contract of :mod:`pyro_vae.models.base`):

1. contract: the module is a :class:`~pyro_vae.models.base.LatentModel` (what ``train``
   refuses otherwise; the checks go on with ``LatentModel``'s defaults for ``observed_site``,
   ``latent_sites`` and ``max_plate_nesting``), and ``model`` and ``guide`` take
   ``(x, y=None, num_data=None)`` (each is then called with the arguments it takes);
2. ``model(x, y)`` and ``guide(x, y)`` run; an exception is reported with its file:line in the
   module's source and the likely fix (``.to_event(1)`` for a vector latent inside the data
   plate), and the checks that need the failed trace are skipped;
3. sites: the observed site ``module.observed_site`` exists, is observed and observes ``x``;
   the guide samples every latent site of the model and nothing else; the declared
   ``latent_sites`` are the model's latent sites;
4. shapes: with the model replayed on the guide's samples, each guide sample has the shape of
   the model's distribution at that site (``fn.shape()``), with as many event dims;
5. supports: the guide's sample lies in the model's support, with the same discreteness and
   support event dim;
6. plates (of every program that ran, even partly): each latent site sits in the same plates
   (name, dim, size) in both programs; every model site sits in the ``"data"`` plate of
   ``len(x)`` points; no site has more batch dims than ``max_plate_nesting`` (a batch dim in
   no plate is named, with ``.to_event(1)`` as the fix); with ``num_data`` given, sites in
   the data plate are scaled by ``num_data / len(x)`` (only when the programs take
   ``num_data``);
7. particles: guide and replayed model run vectorized over a few particles exactly as
   evaluation and multi-sample objectives run them (:func:`pyro_vae.evaluate.log_weights`), and
   the log weights come out ``(particles, len(x))`` and finite: a program that reshapes with
   ``len(x)`` instead of ``z.shape[:-1]`` fails here;
8. every parameter of the module is registered with Pyro (``pyro.module``, under any name);
9. the ELBO (``Trace_ELBO``, one particle) is finite (if not, the sites whose log density is
   not finite are named), and every parameter gets a finite gradient from it.

Step 7 runs once the programs of 2 ran and the plates of 6 pass; the num_data scaling and step 9
run once 2-6 pass (the site declarations of 3 aside): a loss of a pair whose sites disagree says
nothing new. Step 8 needs both programs called, each having run through or registered something
before it raised.

The check leaves no trace: the Pyro param store is cleared before and after, gradients are
``None`` before and after, module buffers (e.g. batch-norm statistics) and the RNG states of
torch (CPU, and the CUDA device of ``x``), NumPy and Python are restored, so a seeded training
run that follows gives the same result as without the check.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine import Trace
from pyro.util import get_rng_state, set_rng_state

from pyro_vae._site_checks import (
    check_declared,
    check_latent,
    check_pair_sites,
    check_plates,
    nonfinite_sites,
    samples,
)
from pyro_vae.errors import (
    PARTICLE_RULE,
    UserError,
    describe_exception,
    hint_for,
    require_latent_model,
    user_code_location,
)
from pyro_vae.evaluate import log_weights
from pyro_vae.models.base import LatentModel

NUM_DATA_FACTOR = 3  # the scaling check calls the programs with num_data = 3 * len(x)
DEFAULTS = {name: getattr(LatentModel, name)
            for name in ("observed_site", "latent_sites", "max_plate_nesting")}
SIGNATURE = "(self, x, y=None, num_data=None)"


def _binds(sig: inspect.Signature, *args: Any, **kwargs: Any) -> bool:
    try:
        sig.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _shown(sig: inspect.Signature) -> str:
    """The parameter names of ``sig``, with ``*``, ``*args`` and ``**kwargs`` as written."""
    kinds, names = inspect.Parameter, []
    for p in sig.parameters.values():
        if p.kind is kinds.KEYWORD_ONLY and not any(n.startswith("*") for n in names):
            names.append("*")
        names.append({kinds.VAR_POSITIONAL: "*", kinds.VAR_KEYWORD: "**"}.get(p.kind, "")
                     + p.name)
    return ", ".join(names)


def _check_signatures(module: Any) -> tuple[list[str], dict[str, set[str] | None]]:
    """Check 1: ``model`` and ``guide`` take ``(x, y=None, num_data=None)`` as the library calls
    them, ``fn(x, y, num_data=n)``. Returns the problems and, per program, the optional
    arguments it takes (``None``: it cannot be called with x at all)."""
    problems, takes = [], {}
    for program in ("model", "guide"):
        fn = getattr(module, program, None)
        if not callable(fn):
            problems.append(f"{type(module).__name__} has no {program} method: write "
                            f"def {program}{SIGNATURE}")
            takes[program] = None
            continue
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # nothing to read: call it as the library does
            takes[program] = {"y", "num_data"}
            continue
        x = object()
        took = {"y", "num_data"} if _binds(sig, x, None, num_data=1) else (
            ({"y"} if _binds(sig, x, None) else set())
            | ({"num_data"} if _binds(sig, x, num_data=1) else set()))
        missing = [m if m not in sig.parameters else f"{m} {how}" for m, how in (
            ("y", "as its second argument"), ("num_data", "as a keyword")) if m not in took]
        callable_with_x = _binds(sig, x, *([None] if "y" in took else []),
                                 **({"num_data": 1} if "num_data" in took else {}))
        takes[program] = took if callable_with_x else None
        if not callable_with_x:
            problems.append(f"{program}({_shown(sig)}) cannot be called as {program}(x): "
                            f"write def {program}{SIGNATURE}")
        elif missing:
            problems.append(f"{program}({_shown(sig)}) does not take {' and '.join(missing)}: "
                            f"write def {program}{SIGNATURE}")
    return problems, takes


class _Programs:
    """``module``'s programs called with the arguments each takes, and the ``LatentModel``
    attributes with their defaults: what :func:`pyro_vae.evaluate.log_weights` needs."""

    def __init__(self, module: Any, takes: dict[str, set[str] | None]):
        self.module, self.takes, self.running = module, takes, None
        for name, default in DEFAULTS.items():
            setattr(self, name, getattr(module, name, default))

    def _call(self, program: str, x: torch.Tensor, y: torch.Tensor | None,
              num_data: int | None) -> Any:
        takes = self.takes[program]
        kwargs = {"num_data": num_data} if "num_data" in takes else {}
        self.running = program  # stays set when it raises
        out = getattr(self.module, program)(*((x, y) if "y" in takes else (x,)), **kwargs)
        self.running = None
        return out

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None,
              num_data: int | None = None) -> Any:
        return self._call("model", x, y, num_data)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None,
              num_data: int | None = None) -> Any:
        return self._call("guide", x, y, num_data)


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


def _raised(module: Any, program: str, exc: BaseException, partial: Trace | None,
            when: str = "", vectorized: bool = False) -> str:
    sites = list(samples(partial)) if partial is not None else []
    after = f" (after sample site {sites[-1]!r})" if sites else ""
    where = user_code_location(exc, module)
    at = f" at {where}" if where else ""
    hint = hint_for(exc, vectorized=vectorized) or (PARTICLE_RULE if vectorized else None)
    return f"the {program} raised {describe_exception(exc)}{when}{after}{at}" + (
        f"; {hint}" if hint else "")


def _check_scaling(programs: _Programs, x: torch.Tensor, y: torch.Tensor | None,
                   traces: dict[str, Trace]) -> list[str]:
    """Check 6: with ``num_data`` given, data-plate sites are scaled by num_data / len(x)."""
    if not all("num_data" in (programs.takes[p] or ()) for p in ("model", "guide")):
        return []
    num_data = NUM_DATA_FACTOR * len(x)
    module = programs.module
    guide_trace, exc = _run(programs.guide, x, y, num_data=num_data)
    if exc is not None:
        return [_raised(module, "guide", exc, guide_trace, f" with num_data={num_data}")]
    model_trace, exc = _run(programs.model, x, y, replay=guide_trace, num_data=num_data)
    if exc is not None:
        return [_raised(module, "model", exc, model_trace, f" with num_data={num_data}")]
    problems = []
    for program, trace in (("model", model_trace), ("guide", guide_trace)):
        unscaled = samples(traces[program])
        for name, site in samples(trace).items():
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


def _check_particles(programs: _Programs, x: torch.Tensor, y: torch.Tensor | None,
                     others: bool) -> list[str]:
    """Check 7: the programs vectorized over particles as evaluation runs them. With ``others``
    (other problems found) only an exception of a program is reported: the log weights of a
    pair whose sites disagree cannot be expected to work out."""
    k = 3 if len(x) == 2 else 2  # never len(x): a reshape by len(x) must not fit by chance
    programs.running = None
    try:
        with torch.no_grad():
            w = log_weights(programs, x, y, k)
    except Exception as exc:
        if programs.running is not None and not isinstance(exc, UserError):
            return [_raised(programs.module, programs.running, exc, None,
                            f" with {k} vectorized particles", vectorized=True)]
        if others:
            return []
        if isinstance(exc, UserError):
            return [f"evaluation refuses the pair: {exc}"]
        return [f"the log weights of {k} vectorized particles could not be formed "
                f"({describe_exception(exc)}); {PARTICLE_RULE}"]
    if others:
        return []
    if tuple(w.shape) != (k, len(x)):
        return [f"the log weights of {k} vectorized particles have shape {tuple(w.shape)}, "
                f"not {(k, len(x))}; {PARTICLE_RULE}"]
    if not torch.isfinite(w).all():
        return [f"the log weights of {k} vectorized particles (as evaluation computes them) "
                "are not finite"]
    return []


def _params(module: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad] \
        if hasattr(module, "named_parameters") else []


def _check_registration(module: Any, traces: dict[str, Trace],
                        raised: dict[str, BaseException | None]) -> list[str]:
    """Check 8: every parameter registered with Pyro, under any name (``pyro.module``)."""
    if len(traces) < 2:
        return []  # a program that could not be called might register the rest
    for program, trace in traces.items():
        if raised[program] is not None and not any(
                s["type"] == "param" for s in trace.nodes.values()):
            return []  # it raised before registering anything: nothing to conclude
    registered = {id(v) for _, v in pyro.get_param_store().named_parameters()}
    missing = [n for n, p in _params(module) if id(p) not in registered]
    return [f"parameter(s) {', '.join(map(repr, missing))} are not registered with Pyro, so "
            "SVI would not train them: call pyro.module(self.name, self) in model and guide"
            ] if missing else []


def _check_elbo_and_gradients(programs: _Programs, x: torch.Tensor, y: torch.Tensor | None,
                              traces: dict[str, Trace]) -> list[str]:
    """Check 9: a finite ELBO, every parameter with a finite gradient."""
    params = _params(programs.module)
    elbo = Trace_ELBO(max_plate_nesting=programs.max_plate_nesting)
    try:
        loss = elbo.differentiable_loss(programs.model, programs.guide, x, y)
    except Exception as exc:
        return [f"the ELBO could not be computed ({describe_exception(exc)})"]
    if not torch.isfinite(loss):
        bad = nonfinite_sites(traces)
        where = f": the log density of {', '.join(bad)} is not finite" if bad else ""
        return [f"the ELBO is not finite ({-loss.item()}){where}"]
    if loss.requires_grad:  # else no parameter enters it (reported below)
        loss.backward()
    faults = {
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


def _check_programs(programs: _Programs, x: torch.Tensor,
                    y: torch.Tensor | None) -> list[str]:
    """Checks 2-9 on the programs that can be called."""
    module = programs.module
    traces, raised = {}, {}
    for program in ("guide", "model"):
        if programs.takes[program] is not None:
            traces[program], raised[program] = _run(getattr(programs, program), x, y)
    problems = [_raised(module, p, exc, traces[p]) for p, exc in raised.items() if exc]
    ran = {p for p, exc in raised.items() if exc is None}
    names, replay_exc = [], None
    if "model" in ran:
        defaulted = {name for name in DEFAULTS if not hasattr(module, name)}
        observed, names = check_declared(programs.observed_site, programs.latent_sites,
                                         defaulted, samples(traces["model"]), x)
        problems += observed
    if ran == {"model", "guide"}:
        replayed, replay_exc = _run(programs.model, x, y, replay=traces["guide"])
        if replay_exc is None:
            traces["model"] = replayed
        guide_sites, replayed_sites = samples(traces["guide"]), samples(replayed)
        problems += check_pair_sites(programs.observed_site, samples(traces["model"]),
                                     guide_sites)
        for name in sorted(set(replayed_sites) & set(guide_sites)):
            if not replayed_sites[name]["is_observed"]:
                problems += check_latent(name, replayed_sites[name], guide_sites[name])
        if replay_exc is not None:
            problems.append(_raised(module, "model", replay_exc, replayed,
                                    " when replayed on the guide's samples"))
    plates = check_plates(traces, x, programs.max_plate_nesting)
    problems, later = problems + plates, []
    if ran == {"model", "guide"} and replay_exc is None and not plates:
        later += _check_particles(programs, x, y, others=bool(problems))
    later += _check_registration(module, traces, raised)
    if not problems and ran == {"model", "guide"}:
        scaling = _check_scaling(programs, x, y, traces)
        elbo = [] if scaling else _check_elbo_and_gradients(programs, x, y, traces)
        if any(p.startswith("the ELBO is not finite") for p in elbo):
            later = [p for p in later if not p.endswith("are not finite")]
        later += scaling + elbo
    return problems + names + later


def check_model_guide(module: Any, x: torch.Tensor,
                      y: torch.Tensor | None = None) -> list[str]:
    """Run the checks of this module's docstring on ``module``; return the failures.

    ``module`` should be a :class:`~pyro_vae.models.LatentModel`; anything else with ``model``
    and ``guide`` methods is checked too, with ``LatentModel``'s defaults for the attributes it
    lacks, and its not being a ``LatentModel`` is the first failure. ``x`` is a small batch of
    data the model accepts, ``y`` its labels if the model is conditional. An empty list means
    every check passed.
    """
    problems, takes = _check_signatures(module)
    try:
        require_latent_model(module, "train")
    except UserError as exc:
        problems.insert(0, str(exc))
    with _no_side_effects(module, x), pyro.validation_enabled(True), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN")  # reported below instead
        return problems + _check_programs(_Programs(module, takes), x, y)


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
