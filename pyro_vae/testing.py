"""Checks to run on a new model/guide pair before training it.

    from pyro_vae.testing import check_model_guide
    problems = check_model_guide(MyModel(config, data_shape), x)   # [] when all is well

Each failure is one sentence that names the site or parameter and what is wrong. The checks:

1. ``model(x, y)`` and ``guide(x, y)`` run;
2. the observed site ``module.observed_site`` exists, is observed, and its value is ``x``;
   the guide samples every latent site of the model and nothing else; the declared
   ``latent_sites`` are the model's latent sites;
3. each guide sample has the shape the model's distribution expects at that site;
4. supports agree: the guide's sample lies in the model's support, with the same
   discreteness and event dimension;
5. plates agree: each latent site sits in the same plates (name, dim, size) in both programs;
6. the ELBO (``Trace_ELBO``) is finite;
7. every parameter of the module gets a finite gradient from it.

The Pyro param store is cleared before and after, and gradients are reset, so the check leaves
no trace on a later training run.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch import nn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _samples(trace) -> dict:
    return {name: s for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)}


def _plates(site: dict) -> set[tuple]:
    return {(f.name, f.dim, f.size) for f in site["cond_indep_stack"]}


def _check_sites(module, model_sites: dict, guide_sites: dict, x: torch.Tensor) -> list[str]:
    problems = []
    obs_name = getattr(module, "observed_site", None)
    observed = {n for n, s in model_sites.items() if s["is_observed"]}
    latent = {n for n, s in model_sites.items() if not s["is_observed"]}
    if obs_name is not None:
        site = model_sites.get(obs_name)
        if site is None:
            problems.append(f"the model has no sample site {obs_name!r} (observed_site)")
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


def _check_latent(name: str, p_site: dict, q_site: dict) -> list[str]:
    problems = []
    p, value = p_site["fn"], q_site["value"]
    expected = tuple(p.batch_shape + p.event_shape)
    if tuple(value.shape) != expected:
        problems.append(f"site {name!r}: the guide samples shape {tuple(value.shape)} but the "
                        f"model expects {expected}")
        return problems
    q = q_site["fn"]
    if len(q.event_shape) != len(p.event_shape):
        problems.append(f"site {name!r}: the guide has event dims {tuple(q.event_shape)}, the "
                        f"model {tuple(p.event_shape)} (use .to_event to match)")
    if p.support.is_discrete != q.support.is_discrete:
        kinds = {True: "discrete", False: "continuous"}
        problems.append(f"site {name!r}: the model's distribution is "
                        f"{kinds[p.support.is_discrete]} but the guide's is "
                        f"{kinds[q.support.is_discrete]}")
    elif p.support.event_dim != q.support.event_dim:
        problems.append(f"site {name!r}: support event dims differ (model "
                        f"{p.support.event_dim}, guide {q.support.event_dim})")
    else:
        try:
            inside = bool(p.support.check(value).all())
        except Exception:  # a support whose check does not broadcast: compare by type
            inside = type(p.support) is type(q.support)
        if not inside:
            problems.append(f"site {name!r}: the guide's sample lies outside the model's "
                            f"support ({p.support})")
    if _plates(p_site) != _plates(q_site):
        problems.append(f"site {name!r}: plates differ, model {sorted(_plates(p_site))} vs "
                        f"guide {sorted(_plates(q_site))}")
    return problems


def _check_gradients(module, x, y) -> list[str]:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad] \
        if isinstance(module, nn.Module) else []
    for _, p in params:
        p.grad = None
    try:
        loss = Trace_ELBO().differentiable_loss(module.model, module.guide, x, y)
    except Exception as exc:
        return [f"the ELBO could not be computed ({_first_line(exc)})"]
    if not torch.isfinite(loss):
        return [f"the ELBO is not finite ({-loss.item()})"]
    loss.backward()
    problems = []
    for name, p in params:
        if p.grad is None:
            problems.append(f"parameter {name!r} gets no gradient from the ELBO "
                            "(unused, or not registered with pyro.module?)")
        elif not torch.isfinite(p.grad).all():
            problems.append(f"parameter {name!r} gets a NaN or infinite gradient")
        p.grad = None
    return problems


def check_model_guide(module, x: torch.Tensor, y: torch.Tensor | None = None) -> list[str]:
    """Run the checks of this module's docstring; return the failures (empty: all good)."""
    pyro.clear_param_store()
    try:
        with pyro.validation_enabled(True):
            try:
                guide_trace = poutine.trace(module.guide).get_trace(x, y)
            except Exception as exc:
                return [f"the guide raised {_first_line(exc)}"]
            try:
                model_trace = poutine.trace(
                    poutine.replay(module.model, trace=guide_trace)).get_trace(x, y)
            except Exception as exc:
                return [f"the model raised {_first_line(exc)}"]
            model_sites, guide_sites = _samples(model_trace), _samples(guide_trace)
            problems = _check_sites(module, model_sites, guide_sites, x)
            for name in sorted(set(model_sites) & set(guide_sites)):
                if not model_sites[name]["is_observed"]:
                    problems += _check_latent(name, model_sites[name], guide_sites[name])
            if not problems:
                problems += _check_gradients(module, x, y)
            return problems
    finally:
        pyro.clear_param_store()


def assert_model_guide(module, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Raise ``AssertionError`` listing every failure of :func:`check_model_guide`."""
    problems = check_model_guide(module, x, y)
    if problems:
        raise AssertionError("model/guide check failed:\n" + "\n".join(f"- {p}" for p in
                                                                       problems))
