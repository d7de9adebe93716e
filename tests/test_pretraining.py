"""The sparse autoencoder (sae) and the stacked autoencoder trained greedily (stacked)."""

import json

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae import EvalConfig, RunConfig, TrainConfig
from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import code_sparsity, latent_means
from pyro_vae.metrics import check_keys
from pyro_vae.models import build_model
from pyro_vae.pretraining import greedy_pretrain, stage_folder
from pyro_vae.runner import open_run, run
from pyro_vae.testing import check_model_guide
from pyro_vae.train import train

SMALL = {"latent_dim": 4, "hidden": (16, 8)}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("name,settings", [
    ("sae", {"latent_dim": 3, "hidden": (16,), "l1": 0.5}),
    *[("stacked", {**SMALL, "stage": s}) for s in range(4)],
], ids=["sae", "stacked-finetune", "stacked-1", "stacked-2", "stacked-3"])
def test_the_pairs_pass_the_check(digits, name, settings):
    assert check_model_guide(build_model(name, digits.shape, **settings),
                             digits.test_x[:8]) == []


@pytest.mark.parametrize("name,settings,width", [
    ("sae", {"latent_dim": 3, "hidden": (16,)}, 3),
    ("stacked", {**SMALL, "stage": 2}, 8),      # a greedy stage: its own layer's code
    ("stacked", {**SMALL, "stage": 0}, 4),      # end to end: the top code
], ids=["sae", "stacked-2", "stacked-finetune"])
def test_encode_is_the_code_the_guide_samples(digits, name, settings, width):
    """What M1 and the pictures read (encode) is the guide's point mass (latent_means)."""
    model = build_model(name, digits.shape, **settings).eval()
    loc, scale = model.encode(digits.test_x[:30])
    assert loc.shape == (30, width)
    assert torch.equal(scale, torch.zeros_like(loc))
    assert torch.allclose(latent_means(model, digits.test_x[:30]), loc)


def test_the_l1_factor_is_lambda_times_the_codes_l1_norm(digits):
    model = build_model("sae", digits.shape, latent_dim=3, hidden=(16,), l1=0.7)
    x = digits.test_x[:25]
    guide = poutine.trace(model.guide).get_trace(x, None)
    trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x, None)
    code = model.encode(x)[0]
    assert torch.equal(trace.nodes["l1"]["fn"].log_factor, -0.7 * code.abs().sum(-1))
    # and it is part of the loss Pyro optimizes: the ELBO differs from the AE's by exactly it
    with_penalty = Trace_ELBO().loss(model.model, model.guide, x, None)
    model.config.l1 = 0.0
    without = Trace_ELBO().loss(model.model, model.guide, x, None)
    assert with_penalty - without == pytest.approx(0.7 * code.abs().sum().item(), rel=1e-5)


def test_a_larger_l1_makes_the_code_sparser(digits):
    measured = {}
    for l1 in (0.0, 1.0):
        pyro.clear_param_store()
        torch.manual_seed(0)
        model = build_model("sae", digits.shape, latent_dim=8, hidden=(32,), l1=l1)
        train(model, digits, TrainConfig(epochs=8, batch_size=64, lr=3e-3), progress=False)
        measured[l1] = code_sparsity(model.eval(), digits.test_x)
    assert measured[1.0]["code_sparsity"] > measured[0.0]["code_sparsity"] + 0.2
    assert measured[1.0]["code_mean_abs"] < 0.5 * measured[0.0]["code_mean_abs"]


def test_bad_settings_are_one_line_errors(digits):
    with pytest.raises(ConfigError, match="l1 must be"):
        build_model("sae", digits.shape, l1=-1.0)
    with pytest.raises(ConfigError, match="stage must be"):
        build_model("stacked", digits.shape, hidden=(16, 8), stage=4)
    with pytest.raises(ConfigError, match="no greedy stages"):
        greedy_pretrain(RunConfig.for_model("ae", dataset="digits"), "unused")


@pytest.fixture(scope="module")
def greedy(tmp_path_factory):
    out = tmp_path_factory.mktemp("greedy")
    config = RunConfig.for_model("stacked", dataset="digits", **SMALL,
                                 train=TrainConfig(epochs=2, batch_size=64),
                                 eval=EvalConfig(num_samples=50, pictures=False))
    pyro.clear_param_store()
    greedy_pretrain(config, out, finetune_epochs=2)
    return out


def _layers(folder):
    model = open_run(folder).model
    return [{k: v.clone() for k, v in layer.state_dict().items()} for layer in model.layers]


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_greedy_stages_freeze_the_layers_below_and_finetuning_changes_all(greedy):
    stages = [_layers(stage_folder(greedy, s)) for s in (1, 2, 3, 0)]
    for s in (1, 2):  # stage s + 1 keeps every layer of stage s but its own, layer s + 1
        before, after = stages[s - 1], stages[s]
        assert all(_same(before[i], after[i]) for i in range(3) if i != s)
        assert not _same(before[s], after[s])
    assert not any(_same(stages[2][i], stages[3][i]) for i in range(3))  # fine-tuning: all
    config = json.loads((stage_folder(greedy, 2) / "config.json").read_text())
    assert config["model_config"]["stage"] == 2
    assert config["init_from"] == str(stage_folder(greedy, 1).absolute())


def test_each_stage_opens_with_pyro_vae_evaluate(greedy, tmp_path, capsys):
    sae = tmp_path / "sae"
    assert main(["train", "sae", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16",
                 "--l1", "0.5", "--epochs", "1", "--eval-samples", "50",
                 "--no-progress", "--out", str(sae)]) == 0
    for folder in (sae, *(stage_folder(greedy, s) for s in (1, 2, 3, 0))):
        assert main(["evaluate", str(folder), "--num-samples", "50", "--no-progress"]) == 0
        metrics = json.loads((folder / "metrics.json").read_text())
        check_keys(metrics)
        assert 0 <= metrics["code_sparsity"] <= 1 and metrics["code_mean_abs"] > 0
    assert "code near zero [share]" in capsys.readouterr().out


def test_init_from_a_folder_without_a_run_is_a_one_line_error(tmp_path):
    config = RunConfig.for_model("stacked", dataset="digits", **SMALL, stage=2,
                                 train=TrainConfig(epochs=1))
    config = config.with_changes(init_from=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="holds no trained run"):
        run(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
