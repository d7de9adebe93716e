"""The checks of :func:`pyro_vae.testing.check_model_guide` that read traces of the programs.

Sites (the observed site, the latent sites of model and guide, ``latent_sites``), shapes and
supports of each latent site, and plates (the data plate, batch dims within
``max_plate_nesting``). Each function returns its failures, one sentence each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from pyro.poutine import Trace

from pyro_vae.estimators.traces import sample_sites

Site = dict[str, Any]


def samples(trace: Trace) -> dict[str, Site]:
    return dict(sample_sites(trace))


def _plates(site: Site) -> set[tuple]:
    return {(f.name, f.dim, f.size) for f in site["cond_indep_stack"]}


def check_declared(obs_name: str, declared: Sequence[str] | None, defaulted: set[str],
                   model_sites: dict[str, Site], x: torch.Tensor) -> tuple[list[str], list[str]]:
    """What the module declares: the observed site ``obs_name`` (observing x) and the latent
    sites ``declared`` (``defaulted``: the names of those that are ``LatentModel``'s defaults).
    Returns the problems that make an ELBO meaningless and those (names) that do not."""
    problems, names = [], []
    whose = {name: "LatentModel's default" if name in defaulted else "its"
             for name in ("observed_site", "latent_sites")}
    observed = [n for n, s in model_sites.items() if s["is_observed"]]
    site = model_sites.get(obs_name)
    if site is None:
        fix = (f": name it {obs_name!r} or set observed_site = {observed[0]!r}"
               if len(observed) == 1 else "")
        names.append(f"the model has no sample site {obs_name!r} ({whose['observed_site']} "
                        f"observed_site){fix}")
    elif not site["is_observed"]:
        problems.append(f"model site {obs_name!r} is not observed: pass obs=x")
    elif site["value"] is not x and not (site["value"].shape == x.shape
                                         and torch.equal(site["value"], x)):
        problems.append(f"model site {obs_name!r} observes something other than x")
    latent = tuple(n for n in model_sites if n not in observed and n != obs_name)
    if declared is not None and set(declared) != set(latent):
        default = "" if whose["latent_sites"] == "its" else " (LatentModel's default)"
        names.append(f"latent_sites declares {sorted(declared)}{default} but the model's "
                     f"latent sites are {sorted(latent)}: set latent_sites = {latent!r}")
    return problems, names


def check_pair_sites(obs_name: str, model_sites: dict[str, Site],
                      guide_sites: dict[str, Site]) -> list[str]:
    """The guide samples exactly the model's latent sites."""
    observed = {n for n, s in model_sites.items() if s["is_observed"] or n == obs_name}
    latent = set(model_sites) - observed
    problems = [f"latent site {name!r} of the model is not sampled by the guide"
                for name in sorted(latent - set(guide_sites))]
    for name in sorted(set(guide_sites) - latent):
        where = "is observed in the model" if name in observed else "is not in the model"
        problems.append(f"guide site {name!r} {where}")
    return problems


def check_latent(name: str, p_site: Site, q_site: Site) -> list[str]:
    """One latent site in model and guide: shape, event dims, support, plates."""
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


def _nesting_fix(site: Site, nesting: int) -> str:
    """What to do about a site with more batch dims than ``max_plate_nesting``."""
    batch = tuple(site["fn"].batch_shape)
    plates = {f.dim: f for f in site["cond_indep_stack"] if f.dim is not None}
    free = 0  # the rightmost batch dims beyond max_plate_nesting that belong to no plate
    while free < len(batch) - nesting and -(free + 1) not in plates:
        free += 1
    if free == 1:
        return (f"its size-{batch[-1]} dim -1 is in no plate: if {batch[-1]} is a vector "
                "latent's dimension, declare it an event dim with .to_event(1)")
    if free > 1:
        return (f"its last {free} dims {batch[-free:]} are in no plate: if they are the "
                f"latent's dimensions, declare them event dims with .to_event({free})")
    deep = [f for d, f in sorted(plates.items(), reverse=True) if -d > nesting]
    if deep:
        f = deep[-1]
        return (f"plate {f.name!r} uses dim {f.dim}: raise max_plate_nesting to {-f.dim}, or, "
                f"if its size {f.size} is a vector latent's dimension, make that the last dim "
                "and declare it an event dim with .to_event(1) instead of a plate")
    return "declare event dims with .to_event or raise max_plate_nesting"


def check_plates(traces: dict[str, Trace], x: torch.Tensor, nesting: int) -> list[str]:
    """Every model site in the data plate of ``len(x)`` points; batch dims within ``nesting``
    (``max_plate_nesting``), in the programs of ``traces`` (``{"model": ..., "guide": ...}``,
    either may be missing or partial)."""
    problems = []
    for name, site in samples(traces.get("model", Trace())).items():
        frames = {f.name: f for f in site["cond_indep_stack"]}
        if "data" not in frames:
            problems.append(f"model site {name!r} is outside the 'data' plate; put it inside "
                            "self.data_plate(x, num_data) (the per-data-point bounds of "
                            "pyro_vae.evaluate need every site in it)")
        elif frames["data"].size != len(x):
            problems.append(f"model site {name!r}: the 'data' plate has size "
                            f"{frames['data'].size} but x has {len(x)} points")
    for program, trace in sorted(traces.items(), key=lambda item: item[0] != "model"):
        for name, site in samples(trace).items():
            batch = tuple(site["fn"].batch_shape)
            if len(batch) > nesting:
                problems.append(f"{program} site {name!r} has batch shape {batch}, more dims "
                                f"than max_plate_nesting = {nesting}: "
                                f"{_nesting_fix(site, nesting)}")
    return problems


def nonfinite_sites(traces: dict[str, Trace]) -> list[str]:
    names = []
    for program, trace in traces.items():
        for name, site in samples(trace).items():
            with contextlib.suppress(Exception):
                if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                    names.append(f"{program} site {name!r}")
    return names
