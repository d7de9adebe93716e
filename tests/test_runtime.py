"""Devices and RNG states: one-line errors for a device that is not there, and a checkpoint's
RNG state that holds (and restores) only the generator of the run's own device. The CUDA
cases run on any machine against a stand-in for ``torch.cuda`` with four GPUs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.runtime import check_device_name, resolve_device, rng_state, set_rng_state


class FakeCuda:
    """``count`` GPUs whose generator states are tensors; records every write."""

    def __init__(self, monkeypatch, count: int = 4):
        self.states = [torch.full((4,), i, dtype=torch.uint8) for i in range(count)]
        self.written: list[tuple[int, int]] = []  # (state's first byte, index)
        self.read: list[int] = []

        def refuse(*args, **kwargs):
            raise AssertionError("every GPU's generator was touched")

        def get(index=0):
            self.read.append(int(index))
            return self.states[index].clone()

        def put(state, index=0):
            self.written.append((int(state[0]), int(index)))

        for name, fn in {"is_available": lambda: True, "device_count": lambda: count,
                         "current_device": lambda: 0, "get_rng_state": get,
                         "set_rng_state": put, "get_rng_state_all": refuse,
                         "set_rng_state_all": refuse}.items():
            monkeypatch.setattr(torch.cuda, name, fn)


@pytest.mark.parametrize("name", ["cuda:x", "cuda:", "cuda:-1", "cuda:1.0", "cuda:٣", "gpu"])
def test_a_device_name_that_is_none(name):
    with pytest.raises(ConfigError) as err:
        check_device_name(name)
    assert "\n" not in str(err.value) and f"device {name!r}" in str(err.value)
    assert "cuda:N" in str(err.value) or name == "gpu"


def test_a_gpu_number_the_machine_lacks(monkeypatch):
    FakeCuda(monkeypatch, count=1)
    with pytest.raises(ConfigError, match=r"^--device cuda:7 was asked for but this machine has "
                                          r"1 CUDA device \(cuda:0\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    FakeCuda(monkeypatch, count=4)
    with pytest.raises(ConfigError, match=r"4 CUDA devices \(cuda:0 to cuda:3\)"):
        resolve_device("cuda:4")


def test_without_cuda_it_says_none_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device(name)


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    code = main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--device", "cuda:x",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "cuda:x" in err, err


def test_a_cpu_run_touches_no_gpu(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    state = rng_state(torch.device("cpu"))
    assert "cuda" not in state and rng_state().keys() == state.keys()
    set_rng_state({**state, "cuda": {"index": 2, "state": cuda.states[2]}}, "cpu")
    assert cuda.read == [] and cuda.written == []


def test_a_gpu_run_saves_its_own_generator_and_resumes_on_another(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    state = rng_state(torch.device("cuda:3"))
    assert cuda.read == [3] and state["cuda"]["index"] == 3
    set_rng_state(state, torch.device("cuda:0"))  # written on cuda:3, resumed on cuda:0
    assert cuda.written == [(3, 0)]
    cuda.written.clear()
    set_rng_state(state, "cpu")  # CUDA -> CPU: the CPU streams only
    set_rng_state(rng_state("cpu"), "cuda:1")  # CPU -> CUDA: nothing to put on the GPU
    assert cuda.written == []
    rng_state("cuda")  # plain cuda: the current device's generator
    assert cuda.read[-1] == 0


def test_an_old_checkpoint_with_every_gpu(monkeypatch):
    """Before the per-device form a checkpoint held a list of every GPU's states: the entry of
    the run's index is restored, and none where the list is shorter (fewer GPUs wrote it)."""
    cuda = FakeCuda(monkeypatch)
    old = {**rng_state("cpu"), "cuda": [s.clone() for s in cuda.states[:2]]}
    set_rng_state(old, "cuda:1")
    set_rng_state(old, "cuda:3")
    assert cuda.written == [(1, 1)]


def test_the_cpu_streams_come_back_bit_for_bit():
    state = rng_state("cpu")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state, "cpu")
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_a_checkpoint_holds_the_generators_of_the_models_device(monkeypatch):
    """``make_checkpoint`` passes the model's device: a CPU model's checkpoint holds no GPU's
    generator even where CUDA is there; ``restore_checkpoint`` puts it back for that device."""
    from pyro_vae.checkpoint import make_checkpoint, restore_checkpoint
    from pyro_vae.train import TrainConfig

    cuda = FakeCuda(monkeypatch)

    class Stepper:
        def get_state(self):
            return {}

        def set_state(self, state):
            pass

    model = torch.nn.Linear(2, 2)
    state = make_checkpoint(model, Stepper(), 0, [], 0.0, TrainConfig(device="cpu"))
    assert "cuda" not in state["rng"] and cuda.read == []
    restore_checkpoint(state, model, Stepper(), lambda m, s: m.load_state_dict(s["model"]))
    assert cuda.written == []
