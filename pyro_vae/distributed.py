"""Data-parallel training on ``torch.distributed``: who this process is, and the collectives
the training loop, its hooks and the run layer use.

Launched by torchrun (``torchrun --nproc_per_node N -m pyro_vae.cli train ...``), a process
finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment and :func:`setup` joins
the process group: ``gloo`` for a CPU run, ``nccl`` for a CUDA run, each process on the GPU
``cuda:LOCAL_RANK``. A plain process (no ``WORLD_SIZE``) never makes a process group, and
every function here is then the identity: rank 0 of a world of 1.

Every collective here waits at most the process group's timeout (``PYRO_VAE_DIST_TIMEOUT``
seconds, default 1800); a collective that fails because another rank stopped is a
:class:`DistributedError` (one line) instead of a traceback, so no rank waits forever for
one that is gone. Decisions that only rank 0 can take (the run folder: checks, lock, writes;
the final evaluation) go through :func:`main_does`: rank 0 does the work and every rank
returns its value or raises the same :class:`~pyro_vae.errors.UserError`.

See docs/distributed.md for what is sharded and reduced.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError, UserError
from pyro_vae.runtime import set_seed

T = TypeVar("T")
TIMEOUT_ENV = "PYRO_VAE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(UserError):
    """A collective failed: another rank stopped (its own error line says why) or timed out."""


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``WORLD_SIZE``) started this process."""
    return "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether this process is in a process group (:func:`setup` ran under a launcher)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (the launcher's ``RANK`` outside the process group; 0 plain)."""
    if active():
        return dist.get_rank()
    return _env_int("RANK") if launched() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name, "0")
    if not value.isdigit():
        raise ConfigError(f"the launcher's {name}={value!r} is not a whole number >= 0")
    return int(value)


def local_rank() -> int:
    return _env_int("LOCAL_RANK") if launched() else 0


def timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds > 0")
    return timedelta(seconds=seconds)


def local_device(device: torch.device) -> torch.device:
    """The device this process trains on: under a launcher a CUDA run takes ``cuda:LOCAL_RANK``
    (one GPU a process, whatever index was asked for); anything else is ``device``."""
    if launched() and device.type == "cuda":
        index = local_rank()
        count = torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"process LOCAL_RANK={index} has no GPU: this machine has {count}; "
                              "start at most that many processes a node (--nproc_per_node)")
        return torch.device("cuda", index)
    return device


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes (idempotent; nothing in a plain process):
    ``nccl`` with this process's GPU for a CUDA ``device``, else ``gloo``. Ranks > 0 log
    warnings only (rank 0 speaks for the run)."""
    if not launched() or active():
        return
    world_size, rank_ = _env_int("WORLD_SIZE"), _env_int("RANK")
    if world_size < 1 or rank_ >= world_size:
        raise ConfigError(f"the launcher's RANK={rank_} is not below WORLD_SIZE={world_size}")
    device = local_device(device)
    kwargs: dict[str, Any] = {"timeout": timeout(), "world_size": world_size, "rank": rank_}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs |= {"backend": "nccl", "device_id": device}
    else:
        kwargs["backend"] = "gloo"
    try:
        dist.init_process_group(**kwargs)
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"rank {rank_} could not join the process group "
                               f"({_reason(exc)})") from None
    atexit.register(shutdown)
    if rank_ > 0:
        logging.getLogger("pyro_vae").setLevel(logging.WARNING)


_state = {"done": False}


def done() -> None:
    """Say that this process's work ended well: at exit it meets the others at a barrier
    before leaving the process group (no rank then closes its connections while another is
    still using them). Without it (an error) a process leaves at once."""
    _state["done"] = True


def shutdown() -> None:
    """Leave the process group (at exit; safe to call twice)."""
    if not active():
        return
    if _state["done"]:
        try:
            dist.barrier()
        except (RuntimeError, dist.DistBackendError):
            pass  # another rank left already: nothing to wait for
    dist.destroy_process_group()
    _state["done"] = False


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _collective(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (RuntimeError, dist.DistBackendError) as exc:  # a peer is gone, or the timeout
        raise DistributedError(f"rank {rank()} lost the other processes: another rank stopped "
                               f"or timed out (its own error says why; {_reason(exc)})") from None


def _comm_device() -> torch.device:
    """Where collectives' tensors must live: this process's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if active():
        _collective(dist.barrier)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (a new tensor on ``tensor``'s device)."""
    if not active():
        return tensor
    buf = tensor.detach().to(_comm_device(), copy=True)
    _collective(lambda: dist.all_reduce(buf, op=dist.ReduceOp.SUM))
    return buf.to(tensor.device)


def broadcast_(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` (in place) with rank 0's values: one flat bucket per dtype."""
    if not active() or world() == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with torch.no_grad():
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1).to(_comm_device()) for t in group])
            _collective(lambda flat=flat: dist.broadcast(flat, src=0))
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


def _to_bytes(obj: Any) -> torch.Tensor:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _from_bytes(buf: torch.Tensor) -> Any:
    # objects saved by this program's own ranks (RNG states hold NumPy arrays, which the
    # weights-only unpickler of torch's broadcast_object_list refuses)
    return torch.load(io.BytesIO(buf.cpu().numpy().tobytes()), weights_only=False)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` (pickled) on every rank."""
    if not active():
        return obj
    device = _comm_device()
    data = _to_bytes(obj).to(device) if is_main() else None
    size = torch.tensor([0 if data is None else data.numel()], device=device)
    _collective(lambda: dist.broadcast(size, src=0))
    if data is None:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    _collective(lambda: dist.broadcast(data, src=0))
    return obj if is_main() else _from_bytes(data)


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` in rank order, on every rank."""
    if not active():
        return [obj]
    device = _comm_device()
    data = _to_bytes(obj).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world())]
    _collective(lambda: dist.all_gather(sizes, torch.tensor([data.numel()], device=device)))
    longest = max(int(s.item()) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    bufs = [torch.empty(longest, dtype=torch.uint8, device=device) for _ in range(world())]
    _collective(lambda: dist.all_gather(bufs, padded))
    return [_from_bytes(b[:int(s.item())]) for b, s in zip(bufs, sizes, strict=True)]


def gather_objects(obj: Any) -> list | None:
    """Every rank's ``obj`` in rank order, on rank 0 (None on the others)."""
    objs = all_gather_objects(obj)
    return objs if is_main() else None


def average_gradients(params: Sequence[torch.Tensor], weight: float) -> None:
    """Replace each parameter's gradient by ``sum over ranks of weight_r * grad_r`` (one
    all-reduce of one flat bucket), where ``weight_r`` is the rank's share of the global
    minibatch, so the result is the gradient of the whole minibatch's loss. A parameter no
    rank gave a gradient keeps ``grad = None`` (Adam skips it, as in a plain run)."""
    if world() == 1:  # the sum of one: nothing to do (weight is 1)
        return
    params = list(params)
    if not params:
        return
    device, dtype = params[0].device, params[0].dtype
    pattern = tuple(p.grad is not None for p in params)
    parts = [p.grad.reshape(-1) if p.grad is not None
             else torch.zeros(p.numel(), device=device, dtype=dtype) for p in params]
    flat = torch.cat([*parts, _flags(pattern, weight, device, dtype)]).mul_(weight)
    _collective(lambda: dist.all_reduce(flat, op=dist.ReduceOp.SUM))
    missing = [i for i, has in enumerate(pattern) if not has]
    # whether another rank gave a gradient this rank did not: read back only then (rare)
    others = (flat[-len(params):][missing].tolist() if missing else [])
    got = dict(zip(missing, others, strict=True))
    offset = 0
    for i, p in enumerate(params):
        if pattern[i] or got[i] > 0:  # a view of the reduced bucket (contiguous), no copy
            p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


_FLAGS: dict[tuple, torch.Tensor] = {}


def _flags(pattern: tuple[bool, ...], weight: float, device, dtype) -> torch.Tensor:
    """Which parameters have a gradient here, divided by ``weight`` (the bucket is multiplied
    by it), kept on the device: no host-to-device copy a step."""
    key = (pattern, weight, str(device), dtype)
    if key not in _FLAGS:
        _FLAGS.clear()
        _FLAGS[key] = torch.tensor(pattern, device=device, dtype=dtype) / weight
    return _FLAGS[key]


def shard_weight(batch_size: int) -> float:
    """This rank's share of a global minibatch of ``batch_size`` points split as
    :meth:`pyro_vae.data.Dataset.batches` splits it (``tensor_split``): 1 in a plain run."""
    if world() == 1:
        return 1.0
    size = len(torch.arange(batch_size).tensor_split(world())[rank()])
    return size / batch_size


def shard(x: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's contiguous part of ``x`` along its first dimension."""
    if x is None or world() == 1:
        return x
    return x.tensor_split(world())[rank()]


def rank_seed(seed: int, rank_: int) -> int:
    """The seed of rank ``rank_ > 0``'s own sampling noise: NumPy's ``SeedSequence`` of
    ``(seed, rank)``, so ranks draw independent streams and a run repeats."""
    return int(np.random.SeedSequence([seed, rank_]).generate_state(1)[0])


def reseed_rank(seed: int) -> None:
    """Ranks > 0 reseed every generator from ``(seed, rank)``; rank 0 keeps the stream of a
    plain run (so a world of 1 is a plain run)."""
    if rank() > 0:
        set_seed(rank_seed(seed, rank()))


def main_does(fn: Callable[[], T], *, share: bool = True) -> T | None:
    """Run ``fn`` on rank 0 alone; every rank returns its value (``share``; it must pickle)
    or None (not ``share``: the others only learn that it succeeded), and if it raised a
    :class:`UserError` every rank raises the same one line. The other ranks wait (at most the
    timeout). A plain process just calls ``fn``."""
    if not active():
        return fn()
    if is_main():
        try:
            value = fn()
        except UserError as exc:
            broadcast_object((False, (type(exc), str(exc))))
            raise
        except BaseException as exc:
            broadcast_object((False, (DistributedError,
                                      f"rank 0 stopped ({type(exc).__name__}: {_reason(exc)})")))
            raise
        broadcast_object((True, value if share else None))
        return value
    ok, payload = broadcast_object(None)
    if not ok:
        cls, message = payload
        try:
            error = cls(message)
        except Exception:  # a subclass with another constructor: the same line all the same
            error = UserError(message)
        raise error
    return payload


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective decision)."""
    if not active():
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


__all__ = ["DistributedError", "active", "all_gather_objects", "all_reduce_sum", "any_rank",
           "average_gradients", "barrier", "broadcast_", "broadcast_object", "done",
           "gather_objects", "is_main", "launched", "local_device", "local_rank", "main_does",
           "rank", "rank_seed", "reseed_rank", "setup", "shard", "shard_weight", "shutdown",
           "timeout", "world"]
