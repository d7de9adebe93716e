"""CUDA graphs for the fast engine (pyro_vae.graphs).

On the CPU, :class:`EagerReplay` stands in for CUDA's capture (it re-runs the captured step on
the static buffers), so the bookkeeping is checked here: when a step is captured, that replays
give the fast engine's parameters bit for bit (static inputs, the last smaller minibatch, a new
learning rate, a KL warm-up), and each reason to fall back. The real capture is the ``cuda``
tests at the end.
"""

from __future__ import annotations

import logging

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import graphs, objectives
from pyro_vae.annealing import kl_weight, scaled_programs
from pyro_vae.data import load_dataset
from pyro_vae.engine import FastStepper, make_stepper
from pyro_vae.graphs import CapturedStepper, EagerReplay, HostReads
from pyro_vae.models import build_model
from pyro_vae.models.base import LatentModel
from pyro_vae.runtime import set_seed
from pyro_vae.train import TrainConfig, train

VAE = ("vae", {"latent_dim": 4, "hidden": (16,)})


def _setup(name, settings, dataset="digits", captured=True, device="cpu", **overrides):
    set_seed(0)
    pyro.clear_param_store()
    data = load_dataset(dataset, device=device)
    model = build_model(name, data.shape, **settings).to(data.device)
    config = TrainConfig(batch_size=64, **overrides)
    elbo = objectives.build_objective(config, model)
    model_fn, guide_fn, kl_scale = scaled_programs(model, model.latent_sites, config.beta)
    if captured:
        stepper = CapturedStepper(model_fn, guide_fn, elbo, config.lr, config.adam_eps,
                                  signature=lambda: (kl_scale.weight,),
                                  backend=None if device == "cuda" else EagerReplay())
    else:
        stepper = make_stepper("fast", model_fn, guide_fn, elbo, lr=config.lr,
                               eps=config.adam_eps, optim_args={"lr": config.lr})
    init = getattr(model, "init_from_data", None)
    if init is not None:
        init(data.train_x)
    return model, data, config, stepper, kl_scale


def _train_steps(name, settings, epochs=3, captured=True, lr_factors=None, **overrides):
    """Epochs of steps as ``train`` runs them (KL weight per step, lr factor per epoch)."""
    model, data, config, stepper, kl_scale = _setup(name, settings, captured=captured,
                                                    **overrides)
    nb = data.num_batches(config.batch_size)
    losses = []
    for epoch in range(epochs):
        if lr_factors is not None:
            stepper.set_lr_factor(lr_factors[epoch])
        for step, (x, y) in enumerate(data.batches(config.batch_size)):
            kl_scale.weight = kl_weight(config.beta, config.kl_warmup_epochs, epoch, step, nb)
            losses.append(stepper.step(x, y, num_data=data.num_train))
    # a smaller minibatch (another key: eager), then a full one again (replayed)
    losses.append(stepper.step(x[:7], None if y is None else y[:7], num_data=data.num_train))
    losses.append(stepper.step(x, y, num_data=data.num_train))
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return params, torch.stack(losses), stepper


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("overrides", [
    pytest.param({}, id="trace"),
    pytest.param({"objective": "iwae", "num_particles": 3}, id="iwae"),
    pytest.param({"free_bits": 0.25}, id="free-bits"),
])
def test_replayed_steps_give_the_fast_engines_parameters_bit_for_bit(overrides):
    got, got_losses, stepper = _train_steps(*VAE, **overrides)
    want, want_losses, _ = _train_steps(*VAE, captured=False, **overrides)
    assert stepper.reason is None and stepper.captures == 1
    # digits at batch 64: 23 minibatches an epoch (1,497 training images; the rest is
    # dropped); the first step discovers, three more warm up, the fifth is captured; then 7
    # images (eager) and one more full minibatch (replayed)
    assert stepper.replays == 3 * 23 - 5 + 1
    _same(got, want)
    assert torch.equal(got_losses, want_losses)


def test_a_new_learning_rate_is_captured_anew():
    got, _, stepper = _train_steps(*VAE, epochs=3, lr_factors=[1.0, 0.5, 0.5])
    want, _, _ = _train_steps(*VAE, epochs=3, captured=False, lr_factors=[1.0, 0.5, 0.5])
    assert stepper.captures == 2 and len(stepper.graphs) == 2
    _same(got, want)


def test_kl_warmup_trains_eagerly_until_its_ramp_ends():
    got, _, stepper = _train_steps(*VAE, epochs=3, kl_warmup_epochs=2)
    want, _, _ = _train_steps(*VAE, epochs=3, captured=False, kl_warmup_epochs=2)
    assert stepper.reason is None and stepper.captures == 1
    assert stepper.replays == 23 - 4 + 1  # the third epoch only, after its warm steps
    _same(got, want)


def test_replayed_steps_read_nothing_back():
    model, data, config, stepper, _ = _setup(*VAE)
    batches = [x for x, _ in data.batches(config.batch_size)][:8]
    for x in batches[:5]:
        stepper.step(x, None, num_data=data.num_train)
    assert stepper.captures == 1
    with HostReads() as reads:
        for x in batches[5:]:
            stepper.step(x, None, num_data=data.num_train)
    assert stepper.replays == 3 and reads.count == 0, reads.ops


class _NoPictures(LatentModel):
    def sample(self, num, y=None):
        raise NotImplementedError

    def encode(self, x, y=None):
        raise NotImplementedError

    def reconstruct(self, x, y=None):
        raise NotImplementedError


class Alternating(_NoPictures):
    """A model whose site names change from step to step (Python state in the model)."""

    name = "alternating"

    def __init__(self, config, data_shape):
        super().__init__(config, data_shape)
        self.loc = torch.nn.Linear(int(torch.tensor(data_shape).prod()), 2)
        self.calls = 0

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample(f"z{self.calls // 2 % 2}", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0)
                            .to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0)
                        .expand([x.shape[0], x.flatten(1).shape[1]]).to_event(1),
                        obs=x.flatten(1))

    def guide(self, x, y=None, num_data=None):  # runs first: it counts the steps
        pyro.module(self.name, self)
        self.calls += 1
        with self.data_plate(x, num_data):
            pyro.sample(f"z{self.calls // 2 % 2}",
                        dist.Normal(self.loc(x.flatten(1)), 1.0).to_event(1))


class Reading(_NoPictures):
    """A model whose code reads a value back to the host every step."""

    name = "reading"

    def __init__(self, config, data_shape):
        super().__init__(config, data_shape)
        self.loc = torch.nn.Linear(int(torch.tensor(data_shape).prod()), 2)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        scale = 1.0 + 0.0 * float(x.mean())  # a host read
        with self.data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), scale).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0)
                        .expand([x.shape[0], x.flatten(1).shape[1]]).to_event(1),
                        obs=x.flatten(1))

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(self.loc(x.flatten(1)), 1.0).to_event(1))


def _fallback(model, data, config) -> CapturedStepper:
    elbo = objectives.build_objective(config, model)
    stepper = CapturedStepper(model.model, model.guide, elbo, config.lr, config.adam_eps,
                              backend=EagerReplay())
    for x, y in list(data.batches(64))[:6]:
        stepper.step(x, y, num_data=data.num_train)
    return stepper


@pytest.mark.parametrize("case,reason", [
    pytest.param(("bernoulli", {"latent_dim": 8}, "digits", {}), "not reparameterized",
                 id="score-function"),
    pytest.param(("gmm", {"num_components": 3}, "gmm-2d", {"objective": "enum"}),
                 "enumerated", id="enumeration"),
])
def test_falls_back_where_a_graph_cannot_hold_the_step(case, reason, caplog):
    name, settings, dataset, overrides = case
    set_seed(0)
    pyro.clear_param_store()
    data = load_dataset(dataset)
    model = build_model(name, data.shape, **settings)
    config = TrainConfig(batch_size=64, **overrides)
    with caplog.at_level(logging.INFO, logger="pyro_vae.graphs"):
        stepper = _fallback(model, data, config)
    assert stepper.captures == 0 and reason in stepper.reason
    assert [r.message for r in caplog.records].count(
        f"CUDA graphs off: {stepper.reason}; steps run eagerly") == 1


@pytest.mark.parametrize("cls,reason", [
    (Alternating, "sample sites changed"),
    (Reading, "reads values back to the host (1 a step: _local_scalar_dense)"),
])
def test_falls_back_for_user_models_that_change_or_read(cls, reason):
    set_seed(0)
    pyro.clear_param_store()
    data = load_dataset("digits")
    model = cls(None, data.shape)
    stepper = _fallback(model, data, TrainConfig(batch_size=64))
    assert stepper.captures == 0 and reason in stepper.reason


def test_a_failed_capture_falls_back_and_the_step_still_runs(caplog):
    class Failing(EagerReplay):
        @staticmethod
        def capture(body):
            raise RuntimeError("operation not permitted when stream is capturing\nmore")

    model, data, config, stepper, _ = _setup(*VAE)
    stepper.backend = Failing()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [x for x, _ in data.batches(config.batch_size)][:6]
    with caplog.at_level(logging.INFO, logger="pyro_vae.graphs"):
        for x in batches:
            stepper.step(x, None, num_data=data.num_train)
    assert stepper.reason == ("capture failed (RuntimeError: operation not permitted when "
                              "stream is capturing")
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_train_with_cuda_graphs_on_the_cpu_says_so_and_trains_eagerly(caplog):
    def run(**kw):
        set_seed(0)
        pyro.clear_param_store()
        data = load_dataset("digits")
        model = build_model("vae", data.shape, latent_dim=2, hidden=(8,))
        train(model, data, TrainConfig(epochs=1, batch_size=64, **kw), progress=False,
              hooks=[])
        return {k: v.clone() for k, v in model.state_dict().items()}

    with caplog.at_level(logging.INFO, logger="pyro_vae.graphs"):
        got = run(cuda_graphs=True)
    assert "CUDA graphs off: the run is on cpu, not CUDA; steps run eagerly" in caplog.text
    _same(got, run())


def test_cuda_graphs_need_the_fast_engine(tmp_path):
    from pyro_vae.errors import ConfigError
    with pytest.raises(ConfigError, match="--cuda-graphs captures the fast engine's step"):
        TrainConfig(cuda_graphs=True, engine="svi")


def test_train_on_the_simulated_device_captures_and_replays(monkeypatch):
    """Through ``train`` on the device-rule harness's simulated CUDA (tests/device_harness.py),
    capture stood in by :class:`EagerReplay`: the static buffers live on the device, the
    replayed steps read nothing back beyond the NaN guard's, and the parameters are the fast
    engine's."""
    from device_harness import host, simulated_cuda
    made = []

    class Recorded(CapturedStepper):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "backend": EagerReplay()})
            made.append(self)

    monkeypatch.setattr(graphs, "CapturedStepper", Recorded)

    def run(**kw):
        with simulated_cuda():
            set_seed(0)
            pyro.clear_param_store()
            data = load_dataset("digits", device="cuda")
            model = build_model("vae", data.shape, latent_dim=2, hidden=(8,)).to(data.device)
            train(model, data, TrainConfig(epochs=2, batch_size=64, device="cuda", **kw),
                  progress=False, hooks=[])
            return {k: host(v).clone() for k, v in model.state_dict().items()}

    got = run(cuda_graphs=True)
    assert made and made[0].captures == 1 and made[0].replays == 2 * 23 - 5
    assert next(iter(made[0].graphs.values())).x.device.type == "cuda"
    _same(got, run())


def test_the_captured_stepper_is_a_fast_stepper_for_checkpoints():
    _, _, stepper = _train_steps(*VAE, epochs=1)
    model, data, config, fresh, _ = _setup(*VAE, captured=False)
    assert isinstance(fresh, FastStepper)
    fresh.set_state(stepper.get_state())
    x, _ = next(data.batches(config.batch_size))
    fresh.step(x, None, num_data=data.num_train)
    assert fresh.get_state().keys() == stepper.get_state().keys()


def test_a_captured_runs_optimizer_state_resumes_under_the_svi_engine_on_the_cpu():
    """On CUDA, capture turns the fused Adam ``capturable``; the checkpoint's Pyro-format
    state must not carry that setting, or the svi engine (whose Adam takes saved settings)
    fails its first CPU step: capturable Adam runs on accelerators only."""
    _, _, stepper = _train_steps(*VAE, epochs=1)
    for group in stepper.optimizer.param_groups:  # what CudaGraphs' capture sets
        group["capturable"] = True
    state = stepper.get_state()
    assert all(not g["capturable"] for s in state.values() for g in s["param_groups"])
    model, data, config, _, _ = _setup(*VAE, captured=False)
    svi = make_stepper("svi", model.model, model.guide, objectives.build_objective(config, model),
                       lr=config.lr, eps=config.adam_eps, optim_args={"lr": config.lr})
    svi.set_state(state)
    x, _ = next(data.batches(config.batch_size))
    assert torch.isfinite(svi.step(x, None, num_data=data.num_train))


# -- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_capture_replays_and_tracks_the_eager_losses():
    got, got_losses, stepper = _train_steps(*VAE, device="cuda")
    want, want_losses, _ = _train_steps(*VAE, captured=False, device="cuda")
    assert stepper.reason is None and stepper.captures == 1 and stepper.replays > 60
    torch.testing.assert_close(got_losses, want_losses, rtol=1e-3, atol=1e-2)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
def test_cuda_capture_falls_back_for_score_function_sites():
    set_seed(0)
    pyro.clear_param_store()
    data = load_dataset("digits", device="cuda")
    model = build_model("bernoulli", data.shape, latent_dim=8).to(data.device)
    stepper = _fallback(model, data, TrainConfig(batch_size=64))
    assert stepper.captures == 0 and "not reparameterized" in stepper.reason


@pytest.mark.cuda
def test_cuda_graphs_train_resume_and_match(tmp_path):
    """A captured run resumed (it warms up and captures again) stays with the uninterrupted
    captured run; a checkpoint of one opens on the CPU."""
    from pyro_vae import RunConfig, open_run, run
    from pyro_vae.runner import resume

    def cfg(epochs):
        return RunConfig("vae", {"latent_dim": 4, "hidden": (16,)}, "digits",
                         train=TrainConfig(epochs=epochs, batch_size=64, device="cuda",
                                           cuda_graphs=True))
    run(cfg(2), tmp_path / "a", progress=False)
    resumed = resume(tmp_path / "a", epochs=3, progress=False)
    whole = run(cfg(3), tmp_path / "b", progress=False)
    assert resumed.training.epochs == 3
    got, want = resumed.run.model.state_dict(), whole.run.model.state_dict()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-3, atol=1e-4)
    assert open_run(tmp_path / "a", device="cpu").model is not None


def test_number_constants_are_filled_on_the_device_while_capturing():
    """torch.distributions makes ``torch.tensor(1.0, device=cuda)`` of ``Normal(loc, 1.0)``'s
    scale: a copy from pageable host memory, forbidden in capture; ``device_constants`` fills
    such numbers on the device instead (same value and dtype), and leaves the rest alone."""
    from device_harness import host, simulated_cuda

    from pyro_vae.graphs import device_constants
    with simulated_cuda():
        before = torch.tensor
        with device_constants():
            for value, dtype in ((2.5, torch.float32), (3, torch.int64), (True, torch.bool)):
                t = torch.tensor(value, device="cuda")
                assert t.device.type == "cuda" and t.dtype == dtype and host(t).item() == value
            assert torch.as_tensor(0.5, device="cuda").dtype == torch.float32
            assert torch.tensor(2, dtype=torch.float64, device="cuda").dtype == torch.float64
            assert torch.tensor([1.0, 2.0]).device.type == "cpu"  # lists: torch's own
            loc = torch.zeros(3, device="cuda")
            assert dist.Normal(loc, 1.0).scale.device.type == "cuda"
        assert torch.tensor is before  # the harness's own patch is back
