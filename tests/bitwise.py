"""Bit-for-bit comparison of what two runs wrote (checkpoints, metrics, history), for the
resume tests: only wall-clock fields may differ."""

import torch

TIMING = {"seconds"}  # wall-clock fields, the only ones allowed to differ


def without_timing(value):
    """``value`` with every dict key in :data:`TIMING` dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list | tuple):
        return type(value)(without_timing(v) for v in value)
    return value


def assert_identical(a, b, where="checkpoint"):
    """Equal bit for bit: tensors by torch.equal (and dtype), containers item by item."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif hasattr(a, "__array__"):  # NumPy RNG state
        assert (a == b).all(), where
    else:
        assert a == b, where
