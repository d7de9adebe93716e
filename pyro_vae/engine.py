"""How one SVI step runs: Pyro's ``SVI`` object, or a fast path with the same semantics.

``train`` asks :func:`make_stepper` for a stepper and calls ``stepper.step(x, y, num_data)``
once per minibatch; both steppers minimise the same objective on the same model/guide pair
and draw the same random numbers, so a seeded run reaches the same parameters either way
(``tests/test_engine.py`` checks it to floating-point noise).

``svi``   the canonical Pyro loop: :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam`,
          which keeps one ``torch.optim.Adam`` per parameter and looks each one up in the
          param store on every step, and an ELBO that reads its value back with ``.item()``.
``fast``  what a hand-written PyTorch loop does, around the same Pyro objective:

          * ``loss = objective.differentiable_loss(model, guide, x, ...)``, ``loss.backward()``
            and one fused ``torch.optim.Adam`` over every parameter the two programs register
            (found by running them under ``poutine.trace(param_only=True)`` on the first step,
            and again whenever the param store grows: a parameter created later joins);
          * the ``trace`` objective as :class:`SyncFreeTrace_ELBO`: when every guide site is
            reparameterized, Trace_ELBO's surrogate *is* the ELBO, so the loss is
            ``guide_trace.log_prob_sum() - model_trace.log_prob_sum()`` kept on the device,
            without Trace_ELBO's per-site ``.item()`` reads (each one a host-device sync on a
            GPU); a particle with score-function sites gets Trace_ELBO's surrogate, also
            without reads;
          * ``meanfield`` and ``enum`` likewise (:class:`SyncFreeTraceMeanField_ELBO`,
            :class:`SyncFreeTraceEnum_ELBO`: no ``torch_item``, no ``warn_if_nan``; Pyro's
            ``compute_expectation`` still reads inside enum's Dice ELBO); the multi-sample
            objectives and free bits read nothing in their ``differentiable_loss``; a NaN loss
            is the training loop's guard's to catch (``tests/test_host_reads.py`` counts);
          * Pyro's argument and shape validation on the first step only (it re-checks every
            distribution's parameters on every step otherwise); the data were checked whole
            before training (``train.check_data``).

The fast path serves every objective that has a ``differentiable_loss`` (trace, meanfield,
iwae, iwae-dreg, rws, vimco, enum, free bits); ``tracegraph`` (its baselines keep their own
optimizer settings) and ``--jit`` (Pyro's compiled ELBOs: faster than plain SVI but slower
than this path on the CPU, ``benchmarks/speed.py --paths torch,pyro,pyro_vae,jit``) fall back
to ``svi``. Under data-parallel training (:mod:`pyro_vae.distributed`) the fast path
broadcasts every parameter it finds from rank 0 (on the first step and whenever the param
store grows) and, between ``backward`` and the fused Adam step, replaces the gradients by
their all-reduced sum weighted by each rank's share of the global minibatch (one flat
bucket); the ``svi`` stepper does neither, and ``train`` refuses it there. Checkpoints hold
the optimizer state in Pyro's format (one Adam state per parameter name) whichever stepper
wrote it, so a run can resume under the other engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import check_fully_reparametrized, is_validation_enabled
from torch.distributions import kl_divergence

from pyro_vae import distributed
from pyro_vae.runtime import rng_state, set_rng_state

ENGINES = ("fast", "svi")


class SyncFreeTrace_ELBO(Trace_ELBO):
    """``Trace_ELBO`` whose ``differentiable_loss`` never reads a value back to the host.

    For a guide whose sample sites are all reparameterized, Trace_ELBO's surrogate equals the
    ELBO estimate itself, ``sum log p(x, z) - sum log q(z | x)`` (the score-function terms are
    zero), so the loss is that difference as a tensor. A particle with non-reparameterized
    sites gets Trace_ELBO's surrogate (score-function terms), its value kept as a tensor too
    (Pyro's reads each site's ``log_prob_sum`` back with ``torch_item``).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            if all(site["fn"].has_rsample for site in guide_trace.nodes.values()
                   if site["type"] == "sample" and not site["is_observed"]):
                particle = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
            else:  # score-function terms: Trace_ELBO's surrogate for this particle
                value, surrogate = self._score_function_particle(model_trace, guide_trace)
                particle = value + (surrogate - surrogate.detach())
            loss = loss + particle
        return loss / self.num_particles

    @staticmethod
    def _score_function_particle(model_trace, guide_trace):
        """Pyro's ``Trace_ELBO._differentiable_loss_particle`` (pyro 1.9: the same terms, the
        same partial Rao-Blackwellization by plates) with the value kept as a tensor instead
        of a sum of ``torch_item`` reads: ``(minus the ELBO estimate, detached; minus the
        surrogate)``."""
        elbo, surrogate, log_r = 0.0, 0.0, None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"].detach()
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            _, score_function_term, entropy_term = site["score_parts"]
            elbo = elbo - site["log_prob_sum"].detach()
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                term = log_r.sum_to(site["cond_indep_stack"])
                surrogate = surrogate + (term * score_function_term).sum()
        return -elbo, -surrogate


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` whose ``differentiable_loss`` never reads a value back.

    Pyro's ``TraceMeanField_ELBO._differentiable_loss_particle`` returns the particle's value
    as a float (``torch_item``, a host read) next to its surrogate, and ``differentiable_loss``
    (inherited from ``Trace_ELBO``) reads the surrogate again and calls ``warn_if_nan`` (a read,
    and one more in a backward hook). The surrogate of this objective *is* its value (every
    latent is reparameterized or scored by an analytic KL), so the loss here is the sum of
    the surrogates, built as Pyro builds them (the same operations, so the same numbers). A
    NaN loss is caught by the training loop's guard (:mod:`pyro_vae.train`).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - self._elbo_particle(model_trace, guide_trace)
        return loss / self.num_particles

    @staticmethod
    def _elbo_particle(model_trace, guide_trace):
        """Pyro's ``TraceMeanField_ELBO._differentiable_loss_particle`` (pyro 1.9) without the
        ``torch_item`` of its value: the ELBO estimate as a tensor."""
        elbo = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo = elbo + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            try:  # the KL in closed form where torch has it, else the sampled terms
                kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
                kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"],
                                       mask=guide_site["mask"])
                kl_qp_sum = (kl_qp.sum() if torch.is_tensor(kl_qp)
                             else kl_qp * torch.Size(guide_site["fn"].batch_shape).numel())
                elbo = elbo - kl_qp_sum
            except NotImplementedError:
                entropy_term = guide_site["score_parts"].entropy_term
                elbo = elbo + model_site["log_prob_sum"] - entropy_term.sum()
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                if is_validation_enabled():
                    check_fully_reparametrized(guide_site)
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return elbo


class SyncFreeTraceEnum_ELBO(TraceEnum_ELBO):
    """``TraceEnum_ELBO.differentiable_loss`` without its ``warn_if_nan`` (two host reads: the
    loss, and its gradient in a backward hook); the training loop's guard catches a NaN loss.

    Pyro still reads back inside: ``pyro.infer.util.compute_expectation`` (called by
    ``pyro.infer.traceenum_elbo._compute_dice_elbo``) tests ``mask.all()`` once per cost term
    (``prob > 0``), a host read this path cannot avoid without re-implementing Dice."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle = _compute_dice_elbo(model_trace, guide_trace)
            if is_identically_zero(elbo_particle):
                continue
            elbo = elbo + elbo_particle
        elbo = elbo / self.num_particles
        if not torch.is_tensor(elbo) or not elbo.requires_grad:
            raise ValueError(f"ELBO is cannot be differentiated: {elbo}")
        return -elbo


def fast_objective(elbo: ELBO) -> ELBO:
    """The objective the fast path uses: the sync-free variant of a plain ``Trace_ELBO``,
    ``TraceMeanField_ELBO`` or ``TraceEnum_ELBO`` (same settings, same numbers)."""
    sync_free = {Trace_ELBO: SyncFreeTrace_ELBO, TraceMeanField_ELBO: SyncFreeTraceMeanField_ELBO,
                 TraceEnum_ELBO: SyncFreeTraceEnum_ELBO}.get(type(elbo))
    if sync_free is None:
        return elbo
    fast = sync_free.__new__(sync_free)
    fast.__dict__.update(elbo.__dict__)  # every setting (particles, plates, enumeration)
    return fast


def _adam(params: list[torch.Tensor], lr: float, eps: float) -> torch.optim.Adam:
    """One Adam over ``params``: fused (one kernel for all tensors) where torch supports it."""
    fused = all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=fused or None)


class SVIStepper:
    """Pyro's SVI with ``pyro.optim.Adam``; ``optim_args`` as :class:`pyro.optim.Adam` takes."""

    engine = "svi"

    def __init__(self, model_fn: Callable, guide_fn: Callable, elbo: ELBO, optim_args):
        self.optim = pyro.optim.Adam(optim_args)
        self.svi = SVI(model_fn, guide_fn, self.optim, elbo)

    def step(self, x, y, num_data: int) -> torch.Tensor:
        # no labels: y is left out rather than passed as None, which Pyro's jit ELBOs cannot
        # trace ("Type 'Tuple[..., NoneType]' cannot be traced")
        args = (x,) if y is None else (x, y)
        return torch.tensor(self.svi.step(*args, num_data=num_data))

    def set_lr_factor(self, factor: float) -> None:
        if factor != 1.0:  # Pyro makes and restores its optimizers lazily, inside svi.step
            raise ValueError("the svi engine trains at a constant learning rate")

    def get_state(self) -> dict:
        return self.optim.get_state()

    def set_state(self, state: dict) -> None:
        self.optim.set_state(state)


class FastStepper:
    """``differentiable_loss`` + ``backward`` + one fused Adam; see the module docstring."""

    engine = "fast"

    def __init__(self, model_fn: Callable, guide_fn: Callable, elbo: ELBO, lr: float,
                 eps: float):
        self.model_fn, self.guide_fn, self.elbo = model_fn, guide_fn, fast_objective(elbo)
        self.lr, self.eps, self.lr_factor = lr, eps, 1.0
        self.optimizer: torch.optim.Adam | None = None
        self.grad_weight = 1.0  # this rank's share of the global minibatch (data-parallel)
        self.names: list[str] = []
        self._pending_state: dict | None = None

    def _discover(self, x, y, num_data: int) -> list[torch.Tensor]:
        """The parameters the programs register (the RNG is put back: nothing is consumed)."""
        state = rng_state(x.device)  # the programs draw on the data's device (and the CPU)
        with poutine.block(), poutine.trace(param_only=True) as tr:
            self.elbo.differentiable_loss(self.model_fn, self.guide_fn, x, y,
                                          num_data=num_data)
        set_rng_state(state, x.device)
        params = {}  # one entry per tensor: a module registered under two names is one tensor
        for site in tr.trace.nodes.values():
            p = site["value"].unconstrained()
            params.setdefault(id(p), p)
        return list(params.values())

    def _build(self, x, y, num_data: int) -> None:
        params = self._discover(x, y, num_data)
        distributed.broadcast_(params)  # every rank starts from rank 0's values
        store = pyro.get_param_store()
        self.names = [store.param_name(p) for p in params]
        self.optimizer = _adam(params, self.lr * self.lr_factor, self.eps)
        self._store_size = len(store)
        if self._pending_state is not None:
            self._load(self._pending_state)
            self._pending_state = None

    def _refresh(self, x, y, num_data: int) -> None:
        """Parameters a program created after the first step join the optimizer (SVI finds
        them by tracing every step; here a growing param store is the signal)."""
        known = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        new = [p for p in self._discover(x, y, num_data) if id(p) not in known]
        store = pyro.get_param_store()
        distributed.broadcast_(new)  # a parameter created later is rank 0's on every rank
        if new:
            self.optimizer.add_param_group({"params": new})
            self.names += [store.param_name(p) for p in new]
        self._store_size = len(store)

    def step(self, x, y, num_data: int) -> torch.Tensor:
        first = self.optimizer is None
        if first:
            self._build(x, y, num_data)
        # data-parallel: a parameter born in this forward pass has this rank's initial value
        # until _refresh broadcasts rank 0's, so the pass is run again from the same random
        # state (its initial value is not drawn again: draws after it shift by that many),
        # and the generators then go on from where the first pass left them
        again = rng_state(x.device) if distributed.world() > 1 else None
        # the first step runs with Pyro's validation as configured, the others without
        with contextlib.nullcontext() if first else pyro.validation_enabled(False):
            loss = self.elbo.differentiable_loss(self.model_fn, self.guide_fn, x, y,
                                                 num_data=num_data)
        if len(pyro.get_param_store()) != self._store_size:
            self._refresh(x, y, num_data)
            if again is not None:
                after = rng_state(x.device)
                set_rng_state(again, x.device)
                with pyro.validation_enabled(False):
                    loss = self.elbo.differentiable_loss(self.model_fn, self.guide_fn, x, y,
                                                         num_data=num_data)
                set_rng_state(after, x.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed.active():  # the gradient of the global minibatch, on every rank
            distributed.average_gradients(
                [p for group in self.optimizer.param_groups for p in group["params"]],
                self.grad_weight)
        self.optimizer.step()
        return loss.detach()

    def set_lr_factor(self, factor: float) -> None:
        """Learning rate ``factor * lr`` from the next step on (a schedule's value)."""
        self.lr_factor = factor
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = self.lr * factor

    def get_state(self) -> dict:
        """Pyro's format: ``{param name: a one-parameter Adam state_dict}``."""
        if self.optimizer is None:
            return dict(self._pending_state or {})
        full = self.optimizer.state_dict()
        group = {k: v for k, v in full["param_groups"][0].items() if k != "params"}
        # this run's kernel choices are not saved: a graph-captured run's capturable Adam
        # would not step on the CPU (resumed by the svi engine, whose Adam takes them)
        group.update(fused=None, capturable=False, params=[0])
        out = {}
        for i, name in enumerate(self.names):
            st = dict(full["state"].get(i, {}))
            if "step" in st:
                st["step"] = st["step"].detach().to("cpu", torch.float32)
            out[name] = {"state": {0: st} if st else {}, "param_groups": [dict(group)]}
        return out

    def set_state(self, state: dict) -> None:
        if self.optimizer is None:
            self._pending_state = state
        else:
            self._load(state)

    def _load(self, state: dict) -> None:
        """Per-parameter moments from a Pyro-format state; hyperparameters stay this run's."""
        full = self.optimizer.state_dict()
        for i, name in enumerate(self.names):
            saved = state.get(name, {}).get("state", {})
            if saved:
                full["state"][i] = next(iter(saved.values()))
        self.optimizer.load_state_dict(full)


def make_stepper(engine: str, model_fn: Callable, guide_fn: Callable, elbo: ELBO, *,
                 lr: float, eps: float, optim_args) -> SVIStepper | FastStepper:
    """The stepper for ``engine``; ``svi`` wherever the fast path does not apply: the
    objective's ``fast_engine`` attribute (set from its registry entry by
    :func:`pyro_vae.objectives.make_objective`) says so."""
    if engine == "fast" and getattr(elbo, "fast_engine", hasattr(elbo, "differentiable_loss")):
        return FastStepper(model_fn, guide_fn, elbo, lr, eps)
    return SVIStepper(model_fn, guide_fn, elbo, optim_args)



LR_SCHEDULES = ("constant", "iwae")


def lr_factor(schedule: str, epoch: int) -> float:
    """The learning-rate multiplier of ``epoch`` (0-based) under ``schedule``.

    ``iwae`` is Burda et al. (2016)'s: stage i = 0..7 lasts 3^i epochs at lr * 10^(-i/7)
    (3,280 epochs in all); later epochs stay at the last stage's rate.
    """
    if schedule == "constant":
        return 1.0
    stage, end = 0, 1
    while epoch >= end and stage < 7:
        stage += 1
        end += 3 ** stage
    return 10.0 ** (-stage / 7)
