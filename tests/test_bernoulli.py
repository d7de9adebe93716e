"""The Bernoulli latent model, the new objectives in training, the CLI and CUDA."""

import pyro
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import importance_bounds
from pyro_vae.models import build_model
from pyro_vae.objectives import make_objective
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import set_seed
from pyro_vae.testing import check_model_guide
from pyro_vae.train import TrainConfig, train


@pytest.mark.parametrize("layers", [1, 2])
def test_the_pair_passes_check_model_guide(layers):
    data = load_dataset("digits")
    model = build_model("bernoulli", data.shape, latent_dim=16, layers=layers)
    assert check_model_guide(model, data.test_x[:10]) == []
    assert model.latent_sites == (("z",) if layers == 1 else ("z1", "z2"))


def test_iwae_refuses_it_and_baselines_belong_to_tracegraph():
    data = load_dataset("digits")
    model = build_model("bernoulli", data.shape, latent_dim=8)
    for name in ("iwae", "iwae-dreg"):
        with pytest.raises(ConfigError, match="reparameterizable"):
            make_objective(name, 3, max_plate_nesting=1).loss(model.model, model.guide,
                                                              data.test_x[:4])
    with pytest.raises(ConfigError, match="tracegraph"):
        TrainConfig(objective="vimco", num_particles=5, baseline="neural")
    with pytest.raises(ConfigError, match="num-particles >= 2"):
        make_objective("vimco", 1)


@pytest.mark.parametrize("objective,k,baseline,layers", [
    ("tracegraph", 1, "neural", 1), ("vimco", 4, "none", 1), ("rws", 4, "none", 1),
    ("tracegraph", 1, "neural", 2)])
def test_each_estimator_trains_it_and_the_bounds_are_ordered(objective, k, baseline, layers):
    data = load_dataset("digits")
    model = build_model("bernoulli", data.shape, latent_dim=20, layers=layers)
    result = train(model, data, TrainConfig(epochs=4, batch_size=64, lr=3e-3,
                                            objective=objective, num_particles=k,
                                            baseline=baseline), progress=False)
    assert result.history[-1]["test_elbo"] > result.history[0]["test_elbo"] + 1
    b = importance_bounds(model, data.test_x[:100], num_samples=100).summary()
    assert b["elbo"] <= b["iwae"][5] <= b["iwae"][50] <= b["log_likelihood"]


def test_resume_with_a_neural_baseline_is_exact(tmp_path):
    def fresh(seed=0):
        set_seed(seed)
        data = load_dataset("digits")
        return build_model("bernoulli", data.shape, latent_dim=8), data

    config = dict(batch_size=128, objective="tracegraph", baseline="neural", baseline_lr=3e-2)
    model, data = fresh()
    train(model, data, TrainConfig(epochs=3, **config), RunFolder(tmp_path / "a"),
          progress=False)
    straight = {k: v.clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    interrupted, data = fresh()
    run = RunFolder(tmp_path / "b")
    train(interrupted, data, TrainConfig(epochs=1, **config), run, progress=False)
    pyro.clear_param_store()
    resumed, data = fresh(seed=7)
    train(resumed, data, TrainConfig(epochs=3, **config), run, resume=True, progress=False)
    store = dict(pyro.get_param_store().items())
    assert any(k.startswith("baseline$$$") for k in straight)
    assert straight.keys() == store.keys()
    for name, value in straight.items():
        assert torch.equal(value, store[name]), name


def test_cli_trains_with_a_baseline_and_refuses_bad_ones(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "bernoulli", "--dataset", "digits", "--epochs", "1", "--latent-dim",
                 "8", "--objective", "tracegraph", "--baseline", "neural", "--baseline-lr",
                 "0.02", "--eval-samples", "50", "--out", str(out), "--no-progress"]) == 0
    assert RunFolder(out).read_config()["train"]["baseline"] == "neural"
    capsys.readouterr()
    assert main(["train", "bernoulli", "--dataset", "digits", "--baseline", "clever",
                 "--objective", "tracegraph", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyro-vae: error:") and "clever" in err and "\n" not in err
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("tracegraph", "vimco", "rws", "iwae-dreg",
                                           "bernoulli"))


@pytest.mark.cuda
@pytest.mark.parametrize("name,objective,k,baseline", [
    ("bernoulli", "tracegraph", 1, "neural"), ("bernoulli", "vimco", 3, "none"),
    ("bernoulli", "rws", 3, "none"), ("vae", "iwae-dreg", 3, "none")])
def test_runs_on_cuda(name, objective, k, baseline):
    data = load_dataset("digits", device="cuda")
    model = build_model(name, data.shape, latent_dim=8)
    result = train(model, data, TrainConfig(epochs=1, batch_size=64, device="cuda",
                                            objective=objective, num_particles=k,
                                            baseline=baseline), progress=False)
    assert all(p.is_cuda for p in model.parameters())
    assert result.history[-1]["test_elbo"] < 0
    b = importance_bounds(model, data.test_x[:50], num_samples=50).summary()
    assert b["elbo"] <= b["log_likelihood"]
