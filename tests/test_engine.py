"""The fast training path gives Pyro's SVI results: same seed, same parameters."""

import math
from dataclasses import replace

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.distributions import constraints

from pyro_vae.data import load_dataset
from pyro_vae.engine import (
    FastStepper,
    SVIStepper,
    SyncFreeTrace_ELBO,
    lr_factor,
    make_stepper,
)
from pyro_vae.errors import ConfigError
from pyro_vae.models import build_model
from pyro_vae.objectives import make_objective
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import set_seed
from pyro_vae.testing import assert_same_parameters
from pyro_vae.train import TrainConfig, train

CASES = {  # id: (model, settings, data set, train settings)
    "vae-trace": ("vae", {"latent_dim": 4, "hidden": (32,)}, "digits", {}),
    "vae-meanfield": ("vae", {"latent_dim": 4, "hidden": (32,)}, "digits",
                      {"objective": "meanfield"}),
    "vae-iwae-k5": ("vae", {"latent_dim": 4, "hidden": (32,)}, "digits",
                    {"objective": "iwae", "num_particles": 5}),
    "vae-free-bits": ("vae", {"latent_dim": 4, "hidden": (32,)}, "digits",
                      {"free_bits": 0.5, "kl_warmup_epochs": 1}),
    "hvae-trace": ("hvae", {"latent_dims": (6, 3), "hidden": (32, 16)}, "digits", {}),
    "bernoulli-trace": ("bernoulli", {"latent_dim": 8}, "digits", {"objective": "trace"}),
    "gmm-enum": ("gmm", {"num_components": 3}, "gmm-2d", {"objective": "enum", "lr": 0.02}),
}


def _train(case: str, engine: str, epochs: int = 2, run=None, resume=False, seed=0,
           device="cpu"):
    name, settings, dataset, config = CASES[case]
    set_seed(seed)
    pyro.clear_param_store()
    data = load_dataset(dataset, device=torch.device(device))
    model = build_model(name, data.shape, **settings)
    cfg = TrainConfig(epochs=epochs, batch_size=64, engine=engine, **config)
    result = train(model, data, cfg, run, resume=resume, progress=False)
    return model, result


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_plain_svi(case):
    """A few epochs (~50 Adam steps) of each engine from the same seed: the same parameters
    and per-epoch ELBOs up to floating-point noise (fused vs per-parameter Adam, the loss
    summed in another order)."""
    fast, fast_result = _train(case, "fast")
    plain, plain_result = _train(case, "svi")
    assert_same_parameters(fast, plain, rtol=1e-4, atol=1e-5)
    for f, p in zip(fast_result.history, plain_result.history, strict=True):
        assert f["train_elbo"] == pytest.approx(p["train_elbo"], rel=1e-5)
        assert f["test_elbo"] == pytest.approx(p["test_elbo"], rel=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("case", ["vae-trace", "vae-iwae-k5", "hvae-trace"])
def test_fast_path_equals_plain_svi_on_cuda(case):
    fast, _ = _train(case, "fast", device="cuda")
    plain, _ = _train(case, "svi", device="cuda")
    assert all(p.is_cuda for p in fast.parameters())
    assert_same_parameters(fast, plain, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model_name,settings", [
    ("vae", {"latent_dim": 4, "hidden": (32,)}),  # reparameterized: the short path
    ("bernoulli", {"latent_dim": 8}),  # score-function terms: Trace_ELBO's surrogate
])
def test_sync_free_trace_elbo_has_trace_elbos_value_and_gradient(model_name, settings):
    data = load_dataset("digits")
    model = build_model(model_name, data.shape, **settings)
    x = data.train_x[:32]
    results = []
    for elbo in (Trace_ELBO(), SyncFreeTrace_ELBO()):
        set_seed(3)
        model.zero_grad()
        loss = elbo.differentiable_loss(model.model, model.guide, x, num_data=1000)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, rtol=1e-6)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-6)


def test_fast_steps_read_nothing_back_from_the_device(monkeypatch):
    """After the first step, a step of the trace objective never converts a tensor to a
    Python value (on a GPU each such read is a synchronisation)."""
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=4, hidden=(32,))
    elbo = make_objective("trace")
    stepper = make_stepper("fast", model.model, model.guide, elbo, lr=1e-3, eps=1e-8,
                           optim_args={"lr": 1e-3})
    assert isinstance(stepper, FastStepper)
    x = data.train_x[:64]
    stepper.step(x, None, num_data=1000)
    reads = []
    for method in ("item", "__bool__", "__float__", "__int__", "tolist"):
        real = getattr(torch.Tensor, method)
        monkeypatch.setattr(torch.Tensor, method,
                            lambda self, *a, _m=method, _r=real: reads.append(_m) or _r(self, *a))
    for _ in range(3):
        loss = stepper.step(x, None, num_data=1000)
    monkeypatch.undo()
    assert reads == []
    assert math.isfinite(float(loss))


def test_a_parameter_created_after_the_first_steps_is_trained_as_svi_trains_it():
    late = {"on": False}

    def model(x, y=None, num_data=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x, y=None, num_data=None):
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = (pyro.param("late_scale", torch.tensor(1.0), constraint=constraints.positive)
                 if late["on"] else torch.tensor(1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale))

    x = torch.full((20,), 3.0)
    finals = []
    for engine in ("svi", "fast"):
        pyro.clear_param_store()
        set_seed(0)
        late["on"] = False
        stepper = make_stepper(engine, model, guide, make_objective("trace"), lr=0.05,
                               eps=1e-8, optim_args={"lr": 0.05})
        for i in range(30):
            late["on"] = i >= 2
            stepper.step(x, None, num_data=20)
        finals.append({k: v.detach().clone() for k, v in pyro.get_param_store().items()})
    svi, fast = finals
    assert set(fast) == {"loc", "late_scale"}
    assert abs(fast["late_scale"].item() - 1.0) > 0.1  # it moved: it was trained
    for k in svi:
        assert torch.allclose(svi[k], fast[k], rtol=1e-5), k


def test_objectives_without_a_differentiable_loss_and_jit_use_svi():
    data = load_dataset("digits")
    model = build_model("bernoulli", data.shape, latent_dim=8)
    args = dict(lr=1e-3, eps=1e-8, optim_args={"lr": 1e-3})
    assert isinstance(make_stepper("fast", model.model, model.guide,
                                   make_objective("tracegraph"), **args), SVIStepper)
    assert isinstance(make_stepper("fast", model.model, model.guide,
                                   make_objective("trace", jit=True), **args), SVIStepper)
    assert isinstance(make_stepper("svi", model.model, model.guide,
                                   make_objective("trace"), **args), SVIStepper)


def test_jit_trains_on_data_without_labels_as_trace_does():
    """Pyro's jit ELBOs cannot trace a None argument: a data set without labels (y None) used to
    end in a RuntimeError traceback under --jit. The jit run trains as the plain one does (not
    to the same numbers: tracing the ELBO draws random numbers of its own)."""
    data = load_dataset("linear-gaussian")
    assert data.train_y is None
    elbos = {}
    for jit in (False, True):
        set_seed(0)
        model = build_model("vae", data.shape, latent_dim=2, hidden=(16,), likelihood="gaussian")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = train(model, data, TrainConfig(epochs=2, batch_size=200, seed=0, jit=jit,
                                                engine="svi"), progress=False)
        elbos[jit] = result.train_elbo
        assert all(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert math.isfinite(elbos[True])
    assert abs(elbos[True] - elbos[False]) < 0.02 * abs(elbos[False]), elbos


@pytest.mark.parametrize("first,then", [("fast", "svi"), ("svi", "fast")])
def test_a_run_resumes_under_the_other_engine(tmp_path, first, then):
    """Checkpoints keep the optimizer state in Pyro's per-parameter format either way."""
    straight, _ = _train("vae-trace", first, epochs=3)
    run = RunFolder(tmp_path / "run")
    _train("vae-trace", first, epochs=1, run=run)
    resumed, _ = _train("vae-trace", then, epochs=3, run=run, resume=True, seed=7)
    assert_same_parameters(straight, resumed, rtol=1e-4, atol=1e-5)


def test_iwae_learning_rate_schedule():
    # stage i lasts 3^i epochs at 10^(-i/7): epochs 0 | 1-3 | 4-12 | 13-39 | ... | 1093-3279
    expected = {0: 0, 1: 1, 3: 1, 4: 2, 12: 2, 13: 3, 1092: 6, 1093: 7, 3279: 7, 5000: 7}
    for epoch, stage in expected.items():
        assert lr_factor("iwae", epoch) == pytest.approx(10 ** (-stage / 7))
    assert sum(1 for e in range(3280) if lr_factor("iwae", e) == 0.1) == 3 ** 7
    assert lr_factor("constant", 123) == 1.0

    set_seed(0)
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=4, hidden=(32,))
    config = TrainConfig(epochs=5, batch_size=256, lr=3e-3, lr_schedule="iwae")
    result = train(model, data, config, progress=False)
    assert [h["lr"] for h in result.history] == pytest.approx(
        [3e-3 * 10 ** (-s / 7) for s in (0, 1, 1, 1, 2)])
    with pytest.raises(ConfigError, match="needs the fast engine"):
        replace(config, engine="svi")
    with pytest.raises(ConfigError, match="engine"):
        TrainConfig(engine="turbo")
