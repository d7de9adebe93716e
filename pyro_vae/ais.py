r"""Annealed importance sampling (AIS) of log p(x) per data point, and BDMC's bracket.

For a data point x take the geometric path from the guide to the joint (Neal 2001):

.. math::
    \log f_t(z) = (1 - \beta_t) \log q(z | x) + \beta_t \log p(x, z),
    \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_T = 1,

so :math:`f_0 = q(z|x)` is normalized and :math:`f_T = p(x, z)` has normalizer p(x). Draw
:math:`z_0 \sim q(z|x)`; for t = 1..T multiply the weight by
:math:`f_t(z_{t-1}) / f_{t-1}(z_{t-1}) = \exp((\beta_t - \beta_{t-1})(\log p(x, z_{t-1}) -
\log q(z_{t-1}|x)))` and move :math:`z_t \sim K_t(z_{t-1}, \cdot)`, a transition that leaves
:math:`f_t` invariant (here Hamiltonian Monte Carlo). Then :math:`E[w] = p(x)`: the weight is
an unbiased estimate of p(x), and by Jensen :math:`E[\log \frac1K \sum_k w_k] \le \log p(x)`
-- the log of the mean over K independent chains is a stochastic lower bound, tighter as T
grows (T = 1 is importance sampling from the guide with K samples).

BDMC's upper bound, from the chain run backwards on simulated data: :mod:`pyro_vae.bdmc`.

The chains run in the unconstrained space of the local continuous latent sites (Pyro's
``biject_to`` of each site's support; the log Jacobian enters both ends of the path and
cancels from the weights), with log q(z|x) and log p(x, z) from Pyro traces (the guide
conditioned on z, the model replayed on it, as :mod:`pyro_vae.importance` does), vectorized
over chains (a particle plate) and data points. HMC's step size is one per data point: a pilot
run with ``pilot_chains`` chains adapts it towards ``target_accept`` (a Robbins-Monro step on
log eps after every temperature, from the acceptance probabilities of that temperature), and
its sequence of step sizes is then *fixed* for the estimating run with fresh chains, so every
transition of that run is chosen before it starts and the estimate is exactly valid AIS.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions import Delta
from torch.distributions import biject_to
from tqdm.auto import tqdm

from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.estimators.traces import data_frame, sample_sites
from pyro_vae.importance import (
    check_points,
    stderr_across_points,
    trace_log_prob,
    with_particles,
)
from pyro_vae.models.base import LatentModel

SCHEDULES = ("sigmoid", "linear")


def schedule(steps: int, kind: str = "sigmoid", delta: float = 4.0,
             device=None) -> torch.Tensor:
    """``steps + 1`` inverse temperatures from 0 to 1 (double): linear, or the sigmoidal
    schedule of Grosse et al. (2013), denser at both ends, rescaled to start at 0, end at 1."""
    check_positive("AIS steps", steps)
    check_choice("AIS schedule", kind, SCHEDULES)
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)
    if kind == "linear":
        return t
    s = torch.sigmoid(delta * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass(frozen=True)
class AISConfig:
    """Settings of one AIS run: ``steps`` temperatures, ``chains`` per data point, HMC with
    ``leapfrog`` steps, a per-point step size adapted towards ``target_accept`` by a pilot of
    ``pilot_chains`` chains from ``step_size``."""

    steps: int = 500
    chains: int = 8
    leapfrog: int = 2
    schedule: str = "sigmoid"
    step_size: float = 0.05
    target_accept: float = 0.65
    pilot_chains: int = 2
    adapt_rate: float = 0.15

    def __post_init__(self) -> None:
        for name in ("steps", "chains", "leapfrog", "pilot_chains"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--ais-{name.replace('_', '-')} must be a whole number "
                                  f">= 1, got {value!r}")
        check_choice("AIS schedule", self.schedule, SCHEDULES)
        if not 0 < self.target_accept < 1 or not self.step_size > 0 or not self.adapt_rate >= 0:
            raise ConfigError("AIS needs 0 < target_accept < 1, step_size > 0, adapt_rate >= 0")


class PathDensities:
    """log q(z|x), log p(x, z) and their gradients for ``chains`` vectorized copies of the
    latents of ``x``, as functions of the unconstrained values ``u`` (a dict by site)."""

    def __init__(self, model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                 chains: int):
        self.model, self.x, self.y, self.chains = model, x, y, chains
        self.nesting = model.max_plate_nesting + 1
        with torch.no_grad():
            trace = poutine.trace(with_particles(model.guide, model, chains)).get_trace(x, y)
        self.sites = sample_sites(trace)
        if not self.sites:
            raise ConfigError("AIS needs latent sites in the guide; it has none")
        self.transforms, self.data_dims = {}, {}
        for name, site in self.sites:
            fn = base = site["fn"]
            while hasattr(base, "base_dist"):  # Independent, masked, expanded wrappers
                base = base.base_dist
            if isinstance(base, Delta) or fn.support.is_discrete or site["is_observed"]:
                raise ConfigError(f"AIS needs continuous latents drawn from a density; guide "
                                  f"site {name!r} is discrete, a point mass or observed")
            self.transforms[name] = biject_to(fn.support)
            self.data_dims[name] = self.nesting + data_frame(name, site).dim
        self.shapes = {name: site["value"].shape for name, site in self.sites}
        self.first = {name: site["value"].detach() for name, site in self.sites}
        self.checked = False

    # -- the values -------------------------------------------------------------------------
    def unconstrain(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: self.transforms[n].inv(z[n].expand(self.shapes[n])).detach()
                for n, _ in self.sites}

    def reduce(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """A tensor of a site's (unconstrained) shape summed to ``(chains, points)``."""
        keep = (0, self.data_dims[name])
        others = [d for d in range(t.dim()) if d not in keep]
        return t.sum(others) if others else t

    def per_point(self, name: str, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-point tensor ``(points,)`` or ``(chains, points)`` shaped to broadcast
        against ``like``, a value of site ``name``."""
        tail = (1,) * (like.dim() - self.data_dims[name] - 1)
        if v.dim() == 1:
            return v.reshape(v.shape + tail)
        pad = (1,) * (self.data_dims[name] - 1)
        return v.reshape(v.shape[:1] + pad + v.shape[1:] + tail)

    # -- the densities ----------------------------------------------------------------------
    def __call__(self, u: dict[str, torch.Tensor]):
        """``(log q + log|J|, log p + log|J|, grad of the first, grad of the second)``, each
        log density ``(chains, points)``, gradients by site."""
        u = {n: v.detach().requires_grad_(True) for n, v in u.items()}
        # the first call validates (Pyro's checks read the device); later ones skip them
        checks = contextlib.nullcontext() if not self.checked else pyro.validation_enabled(False)
        self.checked = True
        with torch.enable_grad(), checks:
            z, log_det = {}, 0.0
            for name, _ in self.sites:
                t = self.transforms[name]
                z[name] = t(u[name])
                ld = t.log_abs_det_jacobian(u[name], z[name])
                if ld.dim() > self.data_dims[name]:  # else a constant (the identity's 0)
                    log_det = log_det + self.reduce(name, ld)
            guide = with_particles(self.model.guide, self.model, self.chains)
            q_trace = poutine.trace(poutine.condition(guide, data=z)).get_trace(self.x, self.y)
            model = with_particles(self.model.model, self.model, self.chains)
            p_trace = poutine.trace(poutine.condition(model, data=z)).get_trace(self.x, self.y)
            log_q = trace_log_prob(q_trace, self.nesting) + log_det
            log_p = trace_log_prob(p_trace, self.nesting) + log_det
            names = [n for n, _ in self.sites]
            grad_q = torch.autograd.grad(log_q.sum(), [u[n] for n in names], retain_graph=True,
                                         allow_unused=True)
            grad_p = torch.autograd.grad(log_p.sum(), [u[n] for n in names], allow_unused=True)

        def pack(grads) -> dict[str, torch.Tensor]:
            return {n: torch.zeros_like(u[n]) if g is None else g
                    for n, g in zip(names, grads, strict=True)}

        shape = (self.chains, self.x.shape[0])
        return (log_q.detach().expand(shape), log_p.detach().expand(shape), pack(grad_q),
                pack(grad_p))


@dataclass
class _State:
    u: dict[str, torch.Tensor]
    log_q: torch.Tensor
    log_p: torch.Tensor
    grad_q: dict[str, torch.Tensor]
    grad_p: dict[str, torch.Tensor]

    def log_f(self, beta) -> torch.Tensor:
        return (1 - beta) * self.log_q + beta * self.log_p

    def grad(self, beta) -> dict[str, torch.Tensor]:
        return {n: (1 - beta) * self.grad_q[n] + beta * self.grad_p[n] for n in self.u}


def _state(path: PathDensities, u: dict[str, torch.Tensor]) -> _State:
    return _State(u, *path(u))


def hmc_step(path: PathDensities, state: _State, beta, step: torch.Tensor,
             leapfrog: int) -> tuple[_State, torch.Tensor]:
    """One HMC transition per chain and point leaving ``f_beta`` invariant, step size
    ``step`` per point; returns the new state and the acceptance probabilities ``(chains,
    points)``."""
    eps = {n: path.per_point(n, step, v) for n, v in state.u.items()}
    mom = {n: torch.randn_like(v) for n, v in state.u.items()}

    def kinetic(m) -> torch.Tensor:
        return 0.5 * sum(path.reduce(n, v.pow(2)) for n, v in m.items())

    h0 = state.log_f(beta) - kinetic(mom)
    grad = state.grad(beta)
    p = {n: mom[n] + 0.5 * eps[n] * grad[n] for n in mom}
    new = state
    for i in range(leapfrog):
        new = _state(path, {n: new.u[n] + eps[n] * p[n] for n in p})
        grad = new.grad(beta)
        half = 0.5 if i == leapfrog - 1 else 1.0
        p = {n: p[n] + half * eps[n] * grad[n] for n in p}
    log_accept = new.log_f(beta) - kinetic(p) - h0
    log_accept = torch.where(torch.isnan(log_accept), torch.full_like(log_accept, -math.inf),
                             log_accept)
    accept_prob = log_accept.clamp(max=0).exp()
    accept = torch.rand_like(accept_prob) < accept_prob

    def pick(a: torch.Tensor, b: torch.Tensor, name: str | None = None) -> torch.Tensor:
        mask = accept if name is None else path.per_point(name, accept, a)
        return torch.where(mask, a, b)

    out = _State({n: pick(new.u[n], state.u[n], n) for n in state.u},
                 pick(new.log_q, state.log_q), pick(new.log_p, state.log_p),
                 {n: pick(new.grad_q[n], state.grad_q[n], n) for n in state.u},
                 {n: pick(new.grad_p[n], state.grad_p[n], n) for n in state.u})
    return out, accept_prob


@dataclass
class AISResult:
    """Per data point: the log weights ``(chains, points)``, the estimate log p(x) (log of
    their mean), its Monte Carlo standard error (delta method over chains), the mean
    acceptance probability and the last step size; ``upper`` marks a reverse (BDMC) run,
    whose estimate is an upper bound."""

    log_w: torch.Tensor
    log_px: torch.Tensor
    mc_stderr: torch.Tensor
    accept: torch.Tensor
    step_size: torch.Tensor
    seconds: float
    upper: bool = False

    def summary(self) -> dict:
        n = len(self.log_px)
        return {"log_px": self.log_px.mean().item(),
                "stderr": stderr_across_points(self.log_px),
                "mc_stderr": (self.mc_stderr.pow(2).sum().sqrt() / n).item(),
                "accept": self.accept.mean().item(), "seconds": self.seconds}


def log_mean_exp(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log of the mean of e^w over dim 0, and its delta-method standard error
    :math:`\\sqrt{\\hat\\sigma^2(e^w) / (K \\overline{e^w}^2)}` (the convention of
    :mod:`pyro_vae.importance`)."""
    k = log_w.shape[0]
    lse = torch.logsumexp(log_w, 0)
    rel_var = torch.expm1(torch.logsumexp(2 * log_w, 0) - 2 * lse + math.log(k)).clamp_min(0)
    return lse - math.log(k), (rel_var / k).sqrt()


def _run(path: PathDensities, betas: torch.Tensor, start: dict[str, torch.Tensor],
         steps: torch.Tensor | None, config: AISConfig, progress: bool, desc: str):
    """The chain over ``betas`` (forward, or reversed for BDMC) from unconstrained ``start``:
    log weights, mean acceptance, and the step sizes used (adapted when ``steps`` is None)."""
    n = path.x.shape[0]
    state = _state(path, start)
    log_w = torch.zeros(path.chains, n, dtype=torch.float64, device=path.x.device)
    step = torch.full((n,), config.step_size, device=path.x.device)
    used, accept_sum = [], torch.zeros(n, device=path.x.device)
    moves = len(betas) - 2
    for t in tqdm(range(1, len(betas)), desc=desc, disable=None if progress else True,
                  leave=False):
        log_w += (betas[t] - betas[t - 1]) * (state.log_p - state.log_q).double()
        if t == len(betas) - 1:  # the last weight needs no move after it
            break
        beta = betas[t].to(state.log_q.dtype)
        if steps is not None:
            step = steps[t - 1]
        state, accept_prob = hmc_step(path, state, beta, step, config.leapfrog)
        mean_accept = accept_prob.mean(0)
        accept_sum += mean_accept
        if steps is None:
            used.append(step)
            step = step * torch.exp(config.adapt_rate * (mean_accept - config.target_accept))
    schedule_used = torch.stack(used) if used else steps
    return log_w, accept_sum / max(1, moves), schedule_used, step


def annealed_estimate(path: PathDensities, betas: torch.Tensor, start, steps, config, progress,
                      desc, upper: bool, began: float) -> AISResult:
    log_w, accept, _, last = _run(path, betas, start, steps, config, progress, desc)
    log_px, se = log_mean_exp(log_w)
    if upper:  # the reverse weights estimate 1 / p(x)
        log_px = -log_px
    return AISResult(log_w, log_px, se, accept, last, time.perf_counter() - began, upper)


def pilot_step_sizes(model, x, y, betas, config, progress) -> torch.Tensor:
    """The pilot: per-point step sizes, one row per move, adapted on ``pilot_chains``."""
    pilot = PathDensities(model, x, y, config.pilot_chains)
    _, _, steps, _ = _run(pilot, betas, pilot.unconstrain(pilot.first), None, config,
                          progress, "AIS pilot (step sizes)")
    if steps is None:  # T = 1: no moves
        steps = torch.full((0, x.shape[0]), config.step_size, device=x.device)
    return steps


def ais(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
        config: AISConfig | None = None, progress: bool = False) -> AISResult:
    """AIS estimates of log p(x_n) for every row of ``x`` (see the module docstring)."""
    config = config or AISConfig()
    check_points(model, x, y)
    began = time.perf_counter()
    betas = schedule(config.steps, config.schedule, device=x.device)
    steps = pilot_step_sizes(model, x, y, betas, config, progress)
    path = PathDensities(model, x, y, config.chains)
    return annealed_estimate(path, betas, path.unconstrain(path.first), steps, config, progress,
                             "AIS", False, began)


__all__ = ["AISConfig", "AISResult", "PathDensities", "ais", "annealed_estimate", "hmc_step",
           "log_mean_exp", "pilot_step_sizes", "schedule"]
