"""A simulated CUDA device for the CPU: CUDA's device rules checked in CI without a GPU.

``simulated_cuda()`` patches what code asks of CUDA (``torch.cuda.is_available()`` is True,
one device, its RNG functions keep a simulated generator state) and enters
:class:`DeviceRuleMode`, a ``TorchDispatchMode``. Tensors asked for on ``cuda`` are
:class:`DeviceTensor` objects: ``torch.Tensor._make_wrapper_subclass`` wrappers whose Python
``device`` is ``cuda:0`` and that hold a real CPU tensor. (The wrapper's C++ device is the CPU:
a wrapper with a C++ CUDA device makes autograd ask the CUDA driver for a stream, which aborts
the process on a machine without one.) Every op is unwrapped, run on the CPU values and its
outputs wrapped back; the mode raises :class:`DeviceRuleError` where CUDA would fail:

* an op mixing a device tensor with a CPU tensor of more than 0 dims (naming the op and the
  line that created the CPU tensor);
* a random draw onto the device fed a CPU ``generator=`` (or a CPU draw fed a device one);
* ``.numpy()`` / ``.tolist()`` / ``np.asarray`` on a device tensor without ``.cpu()``;
* a device index other than 0 (``cuda:7``: "invalid device ordinal").

It counts host reads (``aten._local_scalar_dense``: ``.item()``, ``float()``, ``bool()``) of
device tensors, with the line of each. Draws onto the device without a generator use the
simulated default CUDA generator (not the CPU's), as on CUDA, so RNG state handling that
forgets CUDA's state shows. ``torch.save`` stores device tensors with CUDA locations (a file
loaded without ``map_location`` lands on ``cuda``); ``map_location="cpu"`` gives CPU tensors.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.serialization as tser
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("cuda", 0)
_ORIG_GENERATOR = torch.Generator
_ORIG_TENSOR = torch.tensor
_ORIG_AS_TENSOR = torch.as_tensor
_ORIG_SAVE = torch.save
_ORIG_LOAD = torch.load
_HERE = os.path.abspath(__file__)
_SKIP = (os.path.dirname(torch.__file__), _HERE, os.path.dirname(contextlib.__file__))
aten = torch.ops.aten

# ops where CUDA accepts a CPU tensor beside a device one (copies and indexing move it)
MIXED_OK = {aten.copy_.default, aten._to_copy.default, aten.index.Tensor,
            aten.index_put_.default, aten._index_put_impl_.default, aten.index_put.default,
            aten.set_.source_Tensor, aten.lift_fresh.default, aten.detach.default,
            aten.alias.default}


class DeviceRuleError(RuntimeError):
    """What CUDA would refuse, found on the simulated device."""


def _site() -> str:
    """``file:line`` of the nearest frame outside torch and this harness."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_SKIP) and "<frozen" not in name:
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _is_dev(t) -> bool:
    return isinstance(t, DeviceTensor)


class DeviceTensor(torch.Tensor):
    """A tensor that says it lives on ``cuda:0`` and holds a CPU tensor ``elem``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, device: torch.device = DEVICE):
        assert not isinstance(elem, DeviceTensor)
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=elem.device, requires_grad=False)
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise DeviceRuleError(f"{func} ran on a simulated device tensor outside "
                              "simulated_cuda(), or through a path that skips dispatch modes "
                              "(Tensor.as_subclass: see _provenance_new)")

    @property
    def device(self) -> torch.device:
        return DEVICE

    @property
    def is_cuda(self) -> bool:
        return True

    def get_device(self) -> int:
        return 0

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"DeviceTensor({self.elem!r}, device='{DEVICE}')"

    def numpy(self, *args, **kwargs):
        raise DeviceRuleError("can't convert cuda:0 device type tensor to numpy. Use "
                              f"Tensor.cpu() to copy the tensor to host memory first ({_site()})")

    def tolist(self):
        """CUDA allows it (a device sync): a host read, or an error under ``tolist_raises``."""
        mode = _ACTIVE[-1] if _ACTIVE else None
        if mode is None or mode.tolist_raises:
            raise DeviceRuleError(f".tolist() of a cuda:0 tensor without .cpu() ({_site()})")
        mode.host_reads.append(HostRead("Tensor.tolist", _site(), _lib_site()))
        return self.cpu().tolist()

    def __array__(self, *args, **kwargs):
        return self.numpy()

    def cpu(self, memory_format=torch.preserve_format):
        return aten._to_copy.default(self, device=torch.device("cpu"))

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and torch.device(device).type == "cpu":
            return aten._to_copy.default(self, device=torch.device("cpu"),
                                         dtype=dtype or self.dtype)
        if dtype is None or dtype == self.dtype:
            return self  # already on the device
        return aten._to_copy.default(self, dtype=dtype)

    def cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        _check_index(device)
        return self

    def __reduce_ex__(self, protocol):
        raise DeviceRuleError("pickling a device tensor outside torch.save")


def _check_index(device) -> None:
    if device is None:
        return
    d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if d.type == "cuda" and d.index not in (None, 0):
        raise DeviceRuleError(f"CUDA error: invalid device ordinal ({d}: the simulated machine "
                              "has one device, cuda:0)")


class SimGenerator(_ORIG_GENERATOR):
    """``torch.Generator(device=...)``: a CPU generator, marked as a CUDA one for ``cuda``."""

    def __new__(cls, device="cpu"):
        d = torch.device(device)
        _check_index(d)
        g = super().__new__(cls, "cpu")
        g._sim_device = torch.device("cuda", 0) if d.type == "cuda" else torch.device("cpu")
        return g

    def __init__(self, device="cpu"):
        pass

    @property
    def device(self) -> torch.device:
        return self._sim_device


def _gen_device(g) -> torch.device:
    return getattr(g, "_sim_device", torch.device("cpu"))


# calls whose device="cpu" means the CPU, not the options of their inputs
CONVERSIONS = {"cpu", "to", "tolist", "numpy", "item", "cuda", "__array__", "__reduce_ex__",
               "__deepcopy__", "__repr__", "__format__", "type", "_to_copy", "copy_"}


class GeneratorRuleMode(TorchFunctionMode):
    """``generator=`` checked where Python still holds the :class:`SimGenerator` (the
    dispatcher hands a dispatch mode a fresh ``torch._C.Generator`` wrapper), and the C++ ops
    that take device tensors marked for the dispatch mode."""

    def __init__(self, dispatch: DeviceRuleMode | None = None):
        super().__init__()
        self.dispatch = dispatch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if isinstance(gen, _ORIG_GENERATOR):
            dev = kwargs.get("device")
            if dev is not None:
                want = torch.device(dev).type
            else:
                flat = tree_flatten(args)[0]
                want = "cuda" if any(_is_dev(t) for t in flat) else "cpu"
            have = _gen_device(gen).type
            if have != want:
                raise DeviceRuleError(
                    f"{getattr(func, '__name__', func)}: Expected a '{want}' device type for "
                    f"generator but found '{have}' (a {have} generator= feeds a draw onto "
                    f"{want}, at {_site()})")
        if self.dispatch is None or inspect.isfunction(func) \
                or isinstance(func, torch._ops.OpOverload) \
                or getattr(func, "__name__", "") in CONVERSIONS \
                or not any(_is_dev(t) for t in tree_flatten((args, kwargs))[0]):
            return func(*args, **kwargs)
        # a C++ op on device tensors: the tensors it makes inside take its inputs' options,
        # which on CUDA is the device (here the wrapper's C++ device, the CPU)
        self.dispatch.inside_device_op += 1
        try:
            return func(*args, **kwargs)
        finally:
            self.dispatch.inside_device_op -= 1


def _lib_site() -> str | None:
    """``file:line`` of the nearest pyro_vae frame (who asked, when the read is in Pyro)."""
    frame = sys._getframe(1)
    while frame is not None:
        if f"{os.sep}pyro_vae{os.sep}" in frame.f_code.co_filename:
            return f"pyro_vae/{frame.f_code.co_filename.rsplit('pyro_vae/', 1)[1]}:" \
                   f"{frame.f_lineno}"
        frame = frame.f_back
    return None


@dataclass
class HostRead:
    op: str
    site: str  # the line that read (maybe in Pyro)
    lib_site: str | None = None  # the nearest pyro_vae line on the way there


@dataclass
class DeviceRuleMode(TorchDispatchMode):
    """Runs every op on the CPU values, checking CUDA's device rules; see the module doc."""

    host_reads: list[HostRead] = field(default_factory=list)
    cuda_generator: torch.Generator = field(default_factory=lambda: _ORIG_GENERATOR("cpu"))
    ops: Counter = field(default_factory=Counter)

    tolist_raises: bool = False
    inside_device_op: int = 0

    def __post_init__(self):
        super().__init__()

    def __hash__(self):
        return id(self)

    @staticmethod
    def _cpu_site(t: torch.Tensor) -> str:
        site = getattr(t, "_harness_site", None)
        return f", created at {site}" if site else ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        self.ops[func] += 1
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        dev_in = [t for t in tensors if _is_dev(t)]
        dev_kw = kwargs.get("device")
        to_device = bool(dev_in)
        if dev_kw is not None:
            dev_kw = torch.device(dev_kw)
            if dev_kw.type == "cuda":
                _check_index(dev_kw)
                kwargs["device"] = torch.device("cpu")
                to_device = True
            elif dev_kw.type == "cpu":
                # inside a C++ op on device tensors, "cpu" is its inputs' options
                to_device = self.inside_device_op > 0
                if to_device:
                    dev_kw = DEVICE
        if dev_in and func not in MIXED_OK and dev_kw is None:
            for t in tensors:
                if not _is_dev(t) and t.dim() > 0:
                    raise DeviceRuleError(
                        f"{func}: expected all tensors to be on the same device, but found a "
                        f"cuda:0 tensor and a cpu tensor of shape {tuple(t.shape)}"
                        f"{self._cpu_site(t)} (at {_site()})")
        if func is aten._local_scalar_dense.default and dev_in:
            self.host_reads.append(HostRead(str(func), _site(), _lib_site()))
        # a device draw without generator= uses the (simulated) default CUDA generator
        cuda_draw = (to_device and kwargs.get("generator") is None
                     and torch.Tag.nondeterministic_seeded in func.tags)
        wrappers = {id(t.elem): t for t in dev_in}

        def unwrap(t):
            return t.elem if _is_dev(t) else t

        if cuda_draw:
            cpu_state = torch.get_rng_state()
            torch.set_rng_state(self.cuda_generator.get_state())
            try:
                out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
            finally:
                self.cuda_generator.set_state(torch.get_rng_state())
                torch.set_rng_state(cpu_state)
        else:
            out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if func is aten._to_copy.default and dev_kw is not None and dev_kw.type == "cpu":
            return out

        def wrap(t):
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) in wrappers:  # in place / out=: the same tensor object back
                return wrappers[id(t)]
            return DeviceTensor(t)

        if to_device:
            return tree_map(wrap, out)
        # (the dispatcher fills in device=cpu: a factory without device= looks the same)
        site = _site() if not tensors \
            else getattr(tensors[0], "_harness_site", None) if tensors else None
        if site is not None:  # a CPU factory, or derived from one: its line
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and getattr(t, "_harness_site", None) is None:
                    t._harness_site = site
        return out


def _device_of(kwargs) -> torch.device | None:
    d = kwargs.get("device")
    return None if d is None else torch.device(d)


def _sim_tensor(orig):
    def make(data, *args, **kwargs):
        device = _device_of(kwargs)
        if device is not None and device.type == "cuda":
            _check_index(device)
            kwargs["device"] = "cpu"
            if _is_dev(data):
                data = data.cpu() if orig is _ORIG_TENSOR else data
                if orig is _ORIG_AS_TENSOR:
                    return data.to(dtype=kwargs.get("dtype") or data.dtype)
            return DeviceTensor(orig(data, *args, **kwargs).detach())
        if _is_dev(data) and orig is _ORIG_TENSOR:
            raise DeviceRuleError("torch.tensor() of a device tensor without device= copies it "
                                  f"to the host (at {_site()})")
        return orig(data, *args, **kwargs)
    return make


def _device_state(tensors_on_device: set[int]):
    """A serialization tagger that says ``cuda:0`` for storages of device tensors."""
    def tag(obj):
        if isinstance(obj, torch.storage.UntypedStorage) and obj.data_ptr() in tensors_on_device:
            return "cuda:0"
        return None
    return tag


_SAVING: set[int] = set()
_LOADING: set[int] = set()


def _restore(obj, location):
    if location.startswith("cuda") and _ACTIVE:
        _LOADING.add(obj.data_ptr())
        return obj
    return None


tser.register_package(1, _device_state(_SAVING), _restore)
_ACTIVE: list[DeviceRuleMode] = []


def _sim_save(obj, f, *args, **kwargs):
    def unwrap(t):
        if _is_dev(t):
            elem = t.elem.detach()
            if elem.untyped_storage().data_ptr():
                _SAVING.add(elem.untyped_storage().data_ptr())
            return elem
        return t
    plain = _map_nested(unwrap, obj)
    try:
        return _ORIG_SAVE(plain, f, *args, **kwargs)
    finally:
        _SAVING.clear()


def _map_nested(fn, obj):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        out = type(obj)((k, _map_nested(fn, v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's versions
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list):
        return [_map_nested(fn, v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_map_nested(fn, v) for v in obj)
    return obj


def _sim_load(f, map_location=None, *args, **kwargs):
    if map_location is None:
        _LOADING.clear()
        out = _ORIG_LOAD(f, *args, **kwargs)
        keep = set(_LOADING)
        _LOADING.clear()
        return _map_nested(lambda t: DeviceTensor(t) if t.untyped_storage().data_ptr() in keep
                           and not _is_dev(t) else t, out)
    loc = map_location
    if isinstance(loc, (str, torch.device)) and torch.device(loc).type == "cuda":
        out = _ORIG_LOAD(f, *args, map_location="cpu", **kwargs)
        return _map_nested(lambda t: t if _is_dev(t) else DeviceTensor(t), out)
    return _ORIG_LOAD(f, *args, map_location=map_location, **kwargs)


_DEV_SHELLS: dict[type, type] = {}


def _provenance_new(orig):
    """``pyro.ops.provenance.ProvenanceTensor(data)`` of a device tensor: ``as_subclass`` of a
    wrapper bypasses the dispatch mode, so the shell is made of the CPU values and says
    ``cuda``; every op still runs on ``_t``, the device tensor (its ``__torch_function__``)."""
    def new(cls, data, provenance=frozenset(), **kwargs):
        if not _is_dev(data) or not provenance:
            return orig(cls, data, provenance, **kwargs)
        shell = _DEV_SHELLS.get(cls)
        if shell is None:
            shell = _DEV_SHELLS[cls] = type(f"Device{cls.__name__}", (cls,), {
                "device": DeviceTensor.device, "is_cuda": DeviceTensor.is_cuda})
        ret = data.elem.as_subclass(shell)
        ret._t = data
        ret._provenance = provenance
        return ret
    return staticmethod(new)


def _plain_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
    """``Tensor.cuda()`` of a CPU tensor (torch's own asks the CUDA driver first)."""
    _check_index(device)
    return self.to(DEVICE, non_blocking=non_blocking)


_ORIG_TO = torch.Tensor.to


def _plain_to(self, *args, **kwargs):
    """``Tensor.to`` of a CPU tensor: ``cuda`` without an index is ``cuda:0`` (torch's own asks
    the CUDA driver for the current device)."""
    copy = kwargs.pop("copy", False)
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    if device is None or device.type != "cuda":
        return _ORIG_TO(self, *args, copy=copy, **kwargs)
    _check_index(device)
    kw = {"non_blocking": non_blocking, "copy": copy}
    if memory_format is not None:
        kw["memory_format"] = memory_format
    return _ORIG_TO(self, DEVICE, dtype if dtype is not None else self.dtype, **kw)


class _CudaRNG:
    """``torch.cuda``'s seeding and RNG state functions over the mode's simulated generator."""

    def __init__(self, mode: DeviceRuleMode):
        self.g = mode.cuda_generator

    def manual_seed(self, seed):
        self.g.manual_seed(int(seed))

    def seed(self):
        self.g.seed()

    def initial_seed(self):
        return self.g.initial_seed()

    def get_rng_state(self, device="cuda"):
        _check_index(device)
        return self.g.get_state()

    def get_rng_state_all(self):
        return [self.g.get_state()]

    def set_rng_state(self, new_state, device="cuda"):
        _check_index(device)
        if _is_dev(new_state) or new_state.device.type != "cpu" \
                or new_state.dtype != torch.uint8:
            raise DeviceRuleError("torch.cuda.set_rng_state takes a CPU ByteTensor, got "
                                  f"{new_state.dtype} on {new_state.device}")
        self.g.set_state(new_state)

    def set_rng_state_all(self, new_states):
        new_states = list(new_states)
        if len(new_states) > 1:
            raise DeviceRuleError(f"{len(new_states)} CUDA RNG states for one device")
        for s in new_states:
            self.set_rng_state(s)


@contextlib.contextmanager
def simulated_cuda(*, patch=None) -> Iterator[DeviceRuleMode]:
    """Simulate one CUDA device (see the module docstring); yields the dispatch mode, whose
    ``host_reads`` lists the host reads of device tensors."""
    mode = DeviceRuleMode()
    rng = _CudaRNG(mode)
    cuda = torch.cuda
    patches = {
        (cuda, "is_available"): lambda: True,
        (cuda, "device_count"): lambda: 1,
        (cuda, "is_initialized"): lambda: True,
        (cuda, "_lazy_init"): lambda: None,
        (cuda, "current_device"): lambda: 0,
        (cuda, "synchronize"): lambda device=None: None,
        (cuda, "empty_cache"): lambda: None,
        (cuda, "get_device_name"): lambda device=None: "simulated CUDA device",
        (cuda, "get_device_capability"): lambda device=None: (9, 0),
        # free and total bytes: a large device, so --data-on auto keeps data on it
        (cuda, "mem_get_info"): lambda device=None: (140 * 2**30, 141 * 2**30),
        (cuda, "manual_seed"): rng.manual_seed,
        (cuda, "manual_seed_all"): rng.manual_seed,
        (cuda, "seed"): rng.seed,
        (cuda, "seed_all"): rng.seed,
        (cuda, "initial_seed"): rng.initial_seed,
        (cuda, "get_rng_state"): rng.get_rng_state,
        (cuda, "get_rng_state_all"): rng.get_rng_state_all,
        (cuda, "set_rng_state"): rng.set_rng_state,
        (cuda, "set_rng_state_all"): rng.set_rng_state_all,
        (torch, "Generator"): SimGenerator,
        # an optimizer step asks the driver whether a CUDA graph is being captured
        (torch.optim.Optimizer, "_accelerator_graph_capture_health_check"): lambda self: None,
        (torch, "tensor"): _sim_tensor(_ORIG_TENSOR),
        (torch, "as_tensor"): _sim_tensor(_ORIG_AS_TENSOR),
        (torch.Tensor, "cuda"): _plain_cuda,
        (torch.Tensor, "to"): _plain_to,
        (torch, "save"): _sim_save,
        (torch, "load"): _sim_load,
        **(patch or {}),
    }
    from pyro.ops.provenance import ProvenanceTensor

    patches[(ProvenanceTensor, "__new__")] = _provenance_new(ProvenanceTensor.__new__)
    import torch.cuda.random as cuda_random
    for name in ("manual_seed", "manual_seed_all", "get_rng_state", "get_rng_state_all",
                 "set_rng_state", "set_rng_state_all", "seed", "seed_all", "initial_seed"):
        patches[(cuda_random, name)] = patches[(cuda, name)]
    saved = {key: getattr(*key) for key in patches}
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    # Module.to(device) must replace each parameter by a device one (``param.data = new``
    # would put the wrapper's storage-less body into a plain CPU Parameter)
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        for (obj, name), value in patches.items():
            setattr(obj, name, value)
        _ACTIVE.append(mode)
        with mode, GeneratorRuleMode(mode):
            yield mode
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        _ACTIVE.remove(mode) if mode in _ACTIVE else None
        for (obj, name), value in saved.items():
            setattr(obj, name, value)


def host(t):
    """A nested structure with every device tensor replaced by its CPU values (for asserts)."""
    return _map_nested(lambda x: x.elem.clone() if _is_dev(x) else x, t)


__all__ = ["DEVICE", "DeviceRuleError", "DeviceRuleMode", "DeviceTensor", "HostRead",
           "SimGenerator", "host", "simulated_cuda"]
