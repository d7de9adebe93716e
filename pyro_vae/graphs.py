r"""CUDA graphs for the fast engine: a step captured once and replayed, without Pyro's Python.

On a GPU a 784-400-50 VAE step of hand-written PyTorch takes well under a millisecond, while
Pyro's fixed cost per step -- running both programs under its handlers, replaying the guide,
one ``log_prob`` per site, about 1 ms on the CPU -- is spent in Python before any kernel starts.
A step whose work does not depend on the data's values or on Python state can be recorded once
as a CUDA graph (``torch.cuda.graphs``: every kernel of forward, backward and the fused Adam
update, with their memory) and replayed for every later minibatch, copied into the graph's
static input buffer; the Python of the step then runs once, at capture.

:class:`CapturedStepper` is :class:`~pyro_vae.engine.FastStepper` with that: ``pyro-vae train
--cuda-graphs`` (``TrainConfig.cuda_graphs``) on CUDA. Its steps run eagerly until the step's
*key* -- the minibatch's shape, ``num_data``, the learning-rate factor and the training loop's
own Python settings (the KL weight of warm-up) -- has repeated ``warm_steps`` times in a row
with the same sample sites (names, distributions, shapes, scales, masks) and without a read
back to the host after the first step; then it captures the step for that key and replays it
whenever the key comes again (the last, smaller minibatch of an epoch runs eagerly; a new
learning rate or KL weight is captured anew once it has held for ``warm_steps`` steps, so a KL
warm-up trains eagerly until its ramp ends). Random draws inside the graph come from CUDA's
graph-safe Philox generator: each replay advances the default generator as the eager step
would.

It falls back to eager steps for good, with one log line saying why, where capture is not
possible:

* a guide site that is not reparameterized (a score-function estimator) or is enumerated;
* a step that reads a value back to the host (``.item()``, ``bool(t)``, ...: Pyro's
  ``TraceEnum_ELBO`` does, so does model code that branches on data), which a graph cannot
  hold -- counted by :class:`HostReads` on the eager steps that continue a streak of their
  key (those that lead to a capture; the other eager steps run uncounted);
* sample sites that change between steps (a model whose structure depends on Python state);
* data-parallel training (the all-reduce of the gradients stays outside);
* a capture that fails (the error is named).

The Adam of a captured stepper is fused and *capturable* (its step counters live on the GPU).
A checkpoint holds the optimizer in the same Pyro format as the other steppers, without the
``capturable`` setting, so a run resumes with or without graphs, on either device, under
either engine.

Measured: not yet -- no GPU has been lent to this project's sessions. ``benchmarks/speed.py``
on CUDA adds the paths ``torch-graphs`` (hand-written PyTorch captured the same way) and
``pyro_vae-graphs``; ``tests/test_graphs.py`` checks the bookkeeping on the CPU with
:class:`EagerReplay` (a stand-in backend that re-runs the captured function: bit-for-bit the
fast engine's parameters) and, marked ``cuda``, the real capture. Until it is measured to help,
graphs are off by default.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_vae import distributed
from pyro_vae.engine import FastStepper

log = logging.getLogger(__name__)

#: aten ops that hand a tensor's value to Python (``.item()``, ``float()``, ``bool()`` call
#: ``_local_scalar_dense``): each one a host-device synchronisation on a GPU, and an error
#: inside a CUDA graph capture
READS = frozenset({"_local_scalar_dense", "is_nonzero", "equal", "item"})


class HostReads(TorchDispatchMode):
    """Counts the aten ops that read a tensor's value back to the host (:data:`READS`)."""

    def __init__(self):
        super().__init__()
        self.count = 0
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in READS:
            self.count += 1
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _scale(value) -> object:
    """A site's scale as a signature entry: a float, or a tensor's identity and shape (a new
    tensor at every step changes the signature; its values are not read)."""
    if torch.is_tensor(value):
        return ("tensor", id(value), tuple(value.shape))
    return float(value)


class SiteRecorder(Messenger):
    """Records what a step's sample sites are: name, distribution, value shape, observed,
    scale, mask, reparameterized, enumerated -- everything a captured graph fixes."""

    def __init__(self):
        super().__init__()
        self.sites: list[tuple] = []

    def _postprocess_message(self, msg) -> None:
        fn = msg["fn"]
        if msg["type"] != "sample" or isinstance(fn, _Subsample):  # a plate's subsample site
            return
        mask = msg["mask"]
        self.sites.append((
            msg["name"], type(fn).__name__, tuple(msg["value"].shape), bool(msg["is_observed"]),
            _scale(msg["scale"]), None if mask is None or isinstance(mask, bool) else id(mask),
            bool(getattr(fn, "has_rsample", False)), (msg["infer"] or {}).get("enumerate")))


def _on_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _constant(orig):
    def make(data, *args, dtype=None, device=None, **kwargs):
        if isinstance(data, (bool, int, float)) and not args and not kwargs and _on_cuda(device):
            return torch.full((), data, dtype=dtype, device=device)  # filled on the device
        return orig(data, *args, dtype=dtype, device=device, **kwargs)
    return make


@contextlib.contextmanager
def device_constants():
    """``torch.tensor(number, device="cuda")`` (and ``as_tensor``) as ``torch.full((), number)``
    on the device while a step is captured.

    ``torch.tensor`` of a Python number copies it from pageable host memory, which CUDA graph
    capture forbids ("Cannot copy between CPU and CUDA tensors during CUDA graph capture"), and
    torch.distributions does it for every number parameter (``broadcast_all``: the unit scale
    of ``dist.Normal(loc, 1.0)``). A Python number is a constant of the captured step either
    way; filling it on the device is capturable and gives the same tensor (dtype inferred as
    ``torch.tensor`` infers it)."""
    tensor, as_tensor = torch.tensor, torch.as_tensor  # the ones in use (perhaps patched)
    torch.tensor, torch.as_tensor = _constant(tensor), _constant(as_tensor)
    try:
        yield
    finally:
        torch.tensor, torch.as_tensor = tensor, as_tensor


class CudaGraphs:
    """The real backend: ``torch.cuda.CUDAGraph`` capture, eager steps on a side stream (as
    torch's whole-network capture recipe warms up before capturing)."""

    capturable = True  # the optimizer's step counters must live on the device

    def __init__(self):
        self._side: torch.cuda.Stream | None = None

    @contextlib.contextmanager
    def eager(self):
        if self._side is None:
            self._side = torch.cuda.Stream()
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            yield
        torch.cuda.current_stream().wait_stream(self._side)

    @staticmethod
    def capture(body: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with device_constants(), torch.cuda.graph(graph):
            out = body()

        def replay() -> torch.Tensor:
            graph.replay()
            return out
        replay.graph = graph  # kept alive with its memory pool while the replay is kept
        return replay


class EagerReplay:
    """A stand-in backend for tests on the CPU: "capturing" keeps the step's function and
    replaying runs it again on the static buffers -- the stepper's bookkeeping (keys, static
    inputs, fallbacks, learning rates, checkpoints) without CUDA. Not for training."""

    capturable = False

    @staticmethod
    def eager():
        return contextlib.nullcontext()

    @staticmethod
    def capture(body: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def replay() -> torch.Tensor:
            with device_constants():  # as the real capture runs the step's Python
                return body()
        return replay


class _Graph:
    """One captured step: its static inputs and its replay."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None):
        self.x = x.detach().clone()
        self.y = None if y is None else y.detach().clone()
        self.replay: Callable[[], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        self.x.copy_(x)
        if y is not None:
            self.y.copy_(y)
        return self.replay().clone()  # the next replay overwrites the static output


class CapturedStepper(FastStepper):
    """The fast engine's step, captured as a CUDA graph once its key and sites hold still; see
    the module docstring. ``signature`` returns the training loop's Python settings that the
    step bakes in (the KL weight); ``backend`` is :class:`CudaGraphs` on a GPU."""

    def __init__(self, model_fn: Callable, guide_fn: Callable, elbo, lr: float, eps: float,
                 signature: Callable[[], tuple] = tuple, backend=None, warm_steps: int = 3,
                 max_graphs: int = 2):
        super().__init__(model_fn, guide_fn, elbo, lr, eps)
        self._plain = (model_fn, guide_fn)
        self.model_sites, self.guide_sites = SiteRecorder(), SiteRecorder()
        self.model_fn, self.guide_fn = self.model_sites(model_fn), self.guide_sites(guide_fn)
        self.signature = signature
        self.backend = CudaGraphs() if backend is None else backend
        self.warm_steps, self.max_graphs = warm_steps, max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.captures = 0  # graphs captured so far (a new key, a new learning rate...)
        self.replays = 0
        self.reason: str | None = None  # why steps run eagerly for good, once known
        self._streak: tuple | None = None  # (key, sites, count) of the eager steps in a row

    def _fall_back(self, reason: str) -> None:
        self.reason = reason
        self.graphs.clear()
        self.model_fn, self.guide_fn = self._plain  # no more recording
        log.info("CUDA graphs off: %s; steps run eagerly", reason)

    def _key(self, x, y, num_data: int) -> tuple:
        return (tuple(x.shape), None if y is None else tuple(y.shape), num_data,
                self.lr_factor, tuple(self.signature()))

    def step(self, x, y, num_data: int) -> torch.Tensor:
        if self.reason is not None:
            return FastStepper.step(self, x, y, num_data)
        key = self._key(x, y, num_data)
        graph = self.graphs.get(key)
        if graph is not None:
            self.replays += 1
            return graph(x, y)
        streak = self._streak
        if streak is not None and streak[0] == key and streak[2] >= self.warm_steps:
            return self._capture(key, x, y, num_data)  # this step is the graph's first run
        return self._eager(key, x, y, num_data)

    def _eager(self, key: tuple, x, y, num_data: int) -> torch.Tensor:
        """One eager step, recording its sites and, where it continues a streak of its key
        (the steps that lead to a capture), its reads of values back to the host: counting
        runs Python at every op, which the other eager steps (each step of a KL warm-up,
        a smaller last minibatch) need not pay."""
        self.model_sites.sites, self.guide_sites.sites = [], []
        reads = HostReads()
        first = self.optimizer is None  # the first step: discovery and validation read
        counted = not first and self._streak is not None and self._streak[0] == key
        store = len(pyro.get_param_store())
        with self.backend.eager(), reads if counted else contextlib.nullcontext():
            loss = super().step(x, y, num_data)
        reason = self._why_not(self.model_sites.sites, self.guide_sites.sites, reads)
        if reason is not None:
            self._fall_back(reason)
            return loss
        if first or len(pyro.get_param_store()) != store:  # parameters found: traced again
            self._streak = None
            return loss
        sites = (tuple(self.model_sites.sites), tuple(self.guide_sites.sites))
        if self._streak is not None and self._streak[0] == key:
            if self._streak[1] != sites:
                self._fall_back("the sample sites changed between two steps with the same "
                                "settings (a model whose structure depends on Python state)")
                return loss
            self._streak = (key, sites, self._streak[2] + 1)
        else:
            self._streak = (key, sites, 1)
        return loss

    @staticmethod
    def _why_not(model_sites: list, guide_sites: list, reads: HostReads) -> str | None:
        if distributed.world() > 1:
            return "data-parallel training all-reduces its gradients outside any graph"
        enumerated = sorted({s[0] for s in model_sites + guide_sites if s[7] is not None})
        if enumerated:
            return f"site(s) {', '.join(enumerated)} are enumerated"
        scored = sorted({s[0] for s in guide_sites if not s[3] and not s[6]})
        if scored:
            return f"guide site(s) {', '.join(scored)} are not reparameterized (score function)"
        if reads.count:
            ops = ", ".join(sorted(set(reads.ops)))
            return (f"the step reads values back to the host ({reads.count} a step: {ops}), "
                    f"which a graph cannot hold")
        return None

    def _capture(self, key: tuple, x, y, num_data: int) -> torch.Tensor:
        """Capture the step of ``key`` and run it once on ``(x, y)`` (capturing runs nothing)."""
        graph = _Graph(x, y)
        if self.backend.capturable:  # fused Adam's step counters are on the device already
            for group in self.optimizer.param_groups:
                group["capturable"] = True
            # the eager steps that remain (a smaller last minibatch) need no warning each
            self.optimizer._warned_capturable_if_run_uncaptured = True

        def body() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates into the graph
            with pyro.validation_enabled(False):
                loss = self.elbo.differentiable_loss(self.model_fn, self.guide_fn, graph.x,
                                                     graph.y, num_data=num_data)
            loss.backward()
            self.optimizer.step()
            return loss.detach()

        try:
            graph.replay = self.backend.capture(body)
        except Exception as exc:  # noqa: BLE001 - any failure of capture means: run eagerly
            self.optimizer.zero_grad(set_to_none=True)
            self._fall_back(f"capture failed ({type(exc).__name__}: {exc})".splitlines()[0])
            return FastStepper.step(self, x, y, num_data)
        if len(self.graphs) >= self.max_graphs:  # the oldest goes, with its memory pool
            self.graphs.pop(next(iter(self.graphs)))
        self.graphs[key] = graph
        self.captures += 1
        self._streak = None
        log.debug("captured the step for %s", key)
        return graph(x, y)


def graph_stepper(model_fn: Callable, guide_fn: Callable, elbo, *, lr: float, eps: float,
                  device: torch.device, signature: Callable[[], tuple] = tuple
                  ) -> CapturedStepper | None:
    """A :class:`CapturedStepper` on CUDA, else None (with the log line that says why not)."""
    if device.type != "cuda":
        log.info("CUDA graphs off: the run is on %s, not CUDA; steps run eagerly", device.type)
        return None
    # data-parallel training falls back at its first step, with its line (_why_not)
    return CapturedStepper(model_fn, guide_fn, elbo, lr, eps, signature=signature)
