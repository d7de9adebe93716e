"""Errors raised inside a user's model code become one line naming the file, line and fix."""

import importlib.util
import sys

import pyro
import pytest
import torch

from pyro_vae.errors import (
    PARTICLE_RULE,
    ConfigError,
    ModelCodeError,
    OutOfMemory,
    UserError,
    describe_model_error,
    hint_for,
    model_code_errors,
    require_latent_model,
    user_code_location,
)
from pyro_vae.models import build_model

# A user's file, as someone porting Pyro's tutorial VAE writes it: the decoder reshapes with
# len(x), so it runs on plain x but not vectorized over particles.
SOURCE = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn


def decode(decoder, z, x):
    return decoder(z).reshape(len(x), 3)  # RESHAPE


class TutorialVAE(nn.Module):  # CLASS
    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(2, 3)

    def model(self, x, y=None, num_data=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            loc = decode(self.decoder, z, x)  # CALL
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def flat_model(self, x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            loc = self.decoder(z).reshape(-1, 3)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)  # FLAT

    def vector_latent(self, x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0))  # NO_EVENT

    def raise_(self, exc):
        raise exc  # RAISE
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("my_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_models"] = module
    spec.loader.exec_module(module)
    yield module, path.resolve()
    sys.modules.pop("my_models", None)


def line(marker: str) -> int:
    return next(i for i, text in enumerate(SOURCE.splitlines(), 1) if f"# {marker}" in text)


def at(path, marker: str, func: str) -> str:
    return f"{path}:{line(marker)} (in {func})"


def particles(fn, *args, num=2):
    return pyro.plate("eval_particles", num, dim=-2)(fn)(*args)


def caught(fn, *args) -> Exception:
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value


def test_the_location_is_the_innermost_frame_in_the_model_file(user_file):
    module, path = user_file
    vae, x = module.TutorialVAE(), torch.randn(4, 3)
    vae.model(x)  # plain x: fine
    exc = caught(particles, vae.model, x)
    assert user_code_location(exc, vae) == at(path, "RESHAPE", "decode")
    assert user_code_location(exc, module.TutorialVAE) == at(path, "RESHAPE", "decode")
    assert user_code_location(exc, build_model("linear", (3,))) is None
    assert user_code_location(caught(torch.zeros(2).reshape, 3), vae) is None


def test_a_reshape_by_len_x_gets_the_particle_rule(user_file):
    module, path = user_file
    vae = module.TutorialVAE()
    exc = caught(particles, vae.model, torch.randn(4, 3))
    error = describe_model_error(exc, vae, "evaluation", vectorized=True)
    assert isinstance(error, ModelCodeError) and isinstance(error, UserError)
    assert str(error) == (
        "TutorialVAE raised RuntimeError: shape '[4, 3]' is invalid for input of size 24 at "
        f"{at(path, 'RESHAPE', 'decode')} during evaluation; {PARTICLE_RULE}")
    assert "\n" not in str(error)
    plain = describe_model_error(exc, vae, "training")  # not known to be vectorized: no hint
    assert str(plain).endswith("(in decode) during training")


def test_a_reshape_to_minus_one_folds_particles_into_the_data_plate(user_file):
    module, path = user_file
    vae = module.TutorialVAE()
    exc = caught(particles, vae.flat_model, torch.randn(4, 3))
    assert "Shape mismatch inside plate('data') at site x dim -1, 4 vs 8" in str(exc)
    assert hint_for(exc, vectorized=True) == PARTICLE_RULE
    assert str(describe_model_error(exc, vae, "evaluation", vectorized=True)) == (
        "TutorialVAE raised ValueError: Shape mismatch inside plate('data') at site x dim -1, "
        f"4 vs 8 at {at(path, 'FLAT', 'flat_model')} during evaluation; {PARTICLE_RULE}")


def test_a_vector_latent_without_to_event_gets_the_to_event_hint(user_file):
    module, path = user_file
    vae = module.TutorialVAE()
    exc = caught(vae.vector_latent, torch.randn(4, 3))
    hint = ("site 'z' has size 2 at dim -1 where plate 'data' has 4: if 2 is a vector "
            "latent's dimension, declare it an event dim with .to_event(1)")
    for vectorized in (False, True):  # 2 is no multiple of 4: not the particles
        assert hint_for(exc, vectorized=vectorized) == hint
    assert str(describe_model_error(exc, vae, "training")) == (
        "TutorialVAE raised ValueError: Shape mismatch inside plate('data') at site z dim -1, "
        f"4 vs 2 at {at(path, 'NO_EVENT', 'vector_latent')} during training; {hint}")


def test_model_code_errors_converts_what_the_model_raised(user_file):
    module, path = user_file
    vae, x = module.TutorialVAE(), torch.randn(4, 3)
    with pytest.raises(ModelCodeError) as info, model_code_errors(vae, "evaluation",
                                                                  vectorized=True):
        particles(vae.model, x)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert f"at {at(path, 'RESHAPE', 'decode')} during evaluation; " in str(info.value)
    with pytest.raises(ModelCodeError, match=r"raised KeyError: 'encoder' at .*\(in raise_\)"), \
            model_code_errors(vae, "training"):
        vae.raise_(KeyError("encoder"))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ConfigError("bad setting")],
                         ids=["KeyboardInterrupt", "UserError"])
def test_model_code_errors_lets_some_exceptions_through(user_file, exc):
    vae = user_file[0].TutorialVAE()
    with pytest.raises(type(exc)) as info, model_code_errors(vae, "training"):
        vae.raise_(exc)
    assert info.value is exc


@pytest.mark.parametrize("exc,message", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     "out of GPU memory (asked for 20.00 GiB)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 2560000000000 bytes."),
     "out of host memory (asked for 2384.2 GiB)"),
    (MemoryError(), "out of host memory;"),
], ids=["cuda", "host-allocator", "MemoryError"])
def test_running_out_of_memory_is_not_the_models_fault(user_file, exc, message):
    vae = user_file[0].TutorialVAE()
    with pytest.raises(OutOfMemory) as info, model_code_errors(vae, "training"):
        vae.raise_(exc)
    assert str(info.value).startswith(message) and info.value.__cause__ is exc


def test_an_exception_elsewhere_keeps_its_traceback(user_file):
    vae = user_file[0].TutorialVAE()
    with pytest.raises(RuntimeError) as info, model_code_errors(vae, "training"):
        torch.zeros(2).reshape(3)  # this test file is not the model's
    assert "is invalid for input of size 2" in str(info.value)


def test_require_latent_model_names_the_class_and_the_fix(user_file):
    module, path = user_file
    with pytest.raises(ConfigError) as info:
        require_latent_model(module.TutorialVAE(), "train")
    assert str(info.value) == (
        f"train needs a pyro_vae.LatentModel; TutorialVAE ({path}:{line('CLASS')}) is a "
        "torch.nn.Module: subclass pyro_vae.LatentModel and give model/guide the signature "
        "(x, y=None, num_data=None) (see docs/new_model.md)")
    linear = build_model("linear", (3,))
    require_latent_model(linear, "train")  # does not raise
    with pytest.raises(ConfigError, match=r"LinearGaussian \(.*linear.py:\d+\) is the class "
                                          r"itself: pass an instance of it"):
        require_latent_model(type(linear), "evaluate")
    with pytest.raises(ConfigError, match="; object is not a torch.nn.Module: subclass"):
        require_latent_model(object(), "train")
