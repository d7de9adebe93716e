from dataclasses import replace

import pyro
import pytest
import torch

from pyro_vae.data import load_dataset
from pyro_vae.engine import FastStepper, SVIStepper
from pyro_vae.errors import ConfigError, DataError, TrainingDiverged
from pyro_vae.evaluate import importance_bounds
from pyro_vae.models import build_model
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import set_seed
from pyro_vae.testing import assert_same_parameters
from pyro_vae.train import TrainConfig, train

SMALL = {"latent_dim": 4, "hidden": (32,)}


def _fresh(seed=0, **settings):
    set_seed(seed)
    data = load_dataset("digits")
    return build_model("vae", data.shape, **{**SMALL, **settings}), data


@pytest.mark.parametrize("objective,k", [("trace", 1), ("iwae", 3)])
def test_resume_reaches_the_same_parameters(tmp_path, objective, k):
    config = dict(batch_size=64, objective=objective, num_particles=k)
    model, data = _fresh()
    straight = train(model, data, TrainConfig(epochs=3, **config), RunFolder(tmp_path / "a"),
                     progress=False)

    interrupted, data = _fresh()
    run = RunFolder(tmp_path / "b")
    train(interrupted, data, TrainConfig(epochs=1, **config), run, progress=False)
    pyro.clear_param_store()
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed, data = _fresh(seed=12345)  # a different init: the checkpoint overrides it
    result = train(resumed, data, TrainConfig(epochs=3, **config), run, resume=True,
                   progress=False)
    assert_same_parameters(model, resumed)
    assert [h["test_elbo"] for h in result.history] == [h["test_elbo"]
                                                        for h in straight.history]


def test_same_seed_same_result():
    runs = []
    for _ in range(2):
        model, data = _fresh()
        train(model, data, TrainConfig(epochs=1, batch_size=64), progress=False)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_training_improves_the_elbo_and_the_bounds_are_ordered():
    model, data = _fresh()
    result = train(model, data, TrainConfig(epochs=8, batch_size=64), progress=False)
    assert result.history[-1]["test_elbo"] > result.history[0]["test_elbo"] + 3
    b = importance_bounds(model, data.test_x, num_samples=500).summary()
    assert b["elbo"] <= b["iwae"][5] <= b["iwae"][50] <= b["log_likelihood"]


@pytest.mark.parametrize("engine", ["fast", "svi"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, engine):
    model, data = _fresh()
    run = RunFolder(tmp_path / "run")
    config = TrainConfig(epochs=1, batch_size=64, engine=engine)
    train(model, data, config, run, progress=False)
    before = run.checkpoint_path.read_bytes()
    calls = {"n": 0}
    stepper = {"fast": FastStepper, "svi": SVIStepper}[engine]
    real_step = stepper.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_step(self, *args, **kwargs)
        return torch.tensor(float("nan")) if calls["n"] == 5 else loss

    monkeypatch.setattr(stepper, "step", step)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 5.*checkpoint of epoch 1"):
        train(model, data, replace(config, epochs=3), run, resume=True, progress=False)
    assert run.checkpoint_path.read_bytes() == before


def test_bernoulli_likelihood_refuses_grey_data():
    model, _ = _fresh()
    grey = load_dataset("digits", binarize="none")
    with pytest.raises(DataError, match="not binary"):
        train(model, grey, TrainConfig(epochs=1), progress=False)


def test_gaussian_likelihood_trains_on_grey_values():
    model, _ = _fresh(likelihood="gaussian")
    grey = load_dataset("digits", binarize="none")
    result = train(model, grey, TrainConfig(epochs=3, batch_size=64), progress=False)
    assert result.history[-1]["test_elbo"] > result.history[0]["test_elbo"]


def test_iwae_training_beats_trace_on_test_log_likelihood():
    """The IWAE paper's claim at small scale: same network, budget and seed."""
    scores = {}
    for objective, k in (("trace", 1), ("iwae", 5)):
        model, data = _fresh(latent_dim=8, hidden=(64,))
        train(model, data, TrainConfig(epochs=30, batch_size=64, objective=objective,
                                       num_particles=k), progress=False)
        scores[objective] = importance_bounds(model, data.test_x, num_samples=500).summary()
    assert scores["iwae"]["log_likelihood"] > scores["trace"]["log_likelihood"] + \
        2 * scores["trace"]["log_likelihood_mc_stderr"]


def test_model_refuses_a_kind_of_data_it_does_not_take():
    images = load_dataset("digits", binarize="none")
    model = build_model("linear", (64,))  # right size, wrong kind: pixels are not R^64 here
    with pytest.raises(DataError, match="model linear takes real data; data set digits holds "
                                        "image data"):
        train(model, images, TrainConfig(epochs=1), progress=False)


def test_config_device_must_match_the_data():
    model, data = _fresh()
    with pytest.raises(ConfigError, match="asks for device cuda but the data lives on cpu"):
        train(model, data, TrainConfig(epochs=1, device="cuda"), progress=False)
