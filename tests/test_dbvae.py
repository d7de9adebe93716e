"""dbvae (the joint DB-VAE) and adaptive resampling (``TrainConfig.resample``): the contract,
the rare class drawn more often than uniform sampling draws it, exact resume of a resampled run,
bad flags."""

import math

import pytest
import torch
from bitwise import assert_identical

from pyro_vae import build_model, load_dataset
from pyro_vae.cli import main
from pyro_vae.data import UNLABELLED, Dataset
from pyro_vae.debias import AdaptiveResampledDataset, training_data
from pyro_vae.run_config import RunConfig
from pyro_vae.runner import resume, run
from pyro_vae.runtime import set_seed
from pyro_vae.testing import check_model_guide
from pyro_vae.train import TrainConfig, train

N, RARE, CLASSES = 500, 15, 4  # class 3 has 3% of the points


def _rare_class_case(seed: int = 0) -> Dataset:
    """6x6 binary images: one random prototype per class, each pixel flipped with probability
    0.05; class 3 holds 15 of the 500 training points, the others 161 or 162 each."""
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(CLASSES, 36, generator=gen) < 0.5).float()
    y = torch.cat([torch.full((RARE,), CLASSES - 1), torch.arange(N - RARE) % (CLASSES - 1)])
    x = torch.bernoulli(protos[y] * 0.9 + 0.05, generator=gen).view(N, 1, 6, 6)
    return Dataset("rare-class", x, y, x[:100], y[:100], "image", "none")


def test_dbvae_passes_the_checks_with_and_without_labels():
    digits = load_dataset("digits")
    model = build_model("dbvae", digits.shape, latent_dim=3, hidden=(16,))
    x, y = digits.test_x[:8], digits.test_y[:8].clone()
    assert check_model_guide(model, x) == []  # evaluation: a plain VAE
    assert check_model_guide(model, x, y) == []  # training: the classification factor
    y[::2] = UNLABELLED
    assert check_model_guide(model, x, y) == []


def test_the_classification_factor_is_weighted_log_q_of_the_label():
    from pyro import poutine

    digits = load_dataset("digits")
    model = build_model("dbvae", digits.shape, latent_dim=3, hidden=(16,), class_weight=7.0)
    x, y = digits.test_x[:5], digits.test_y[:5]
    tr = poutine.trace(model.model).get_trace(x, y)
    log_q = torch.log_softmax(model.class_logits(x), -1)[torch.arange(5), y]
    assert torch.allclose(tr.nodes["y_class"]["fn"].log_factor, 7.0 * log_q)
    assert "y_class" not in poutine.trace(model.model).get_trace(x).nodes


@pytest.mark.parametrize("data_seed, seed", [(0, 0), (1, 0), (0, 1)])
def test_adaptive_resampling_draws_the_rare_class_far_above_its_uniform_share(data_seed, seed):
    data = _rare_class_case(data_seed)
    set_seed(seed)
    model = build_model("dbvae", data.shape, latent_dim=2, hidden=(32,), num_classes=CLASSES)
    config = TrainConfig(epochs=6, batch_size=50, lr=0.01, seed=seed, device="cpu",
                         resample="histogram", resample_alpha=0.01)
    history = train(model, data, config, progress=False).history
    assert all(h["resample_rarest_class"] == CLASSES - 1 for h in history)
    # each epoch's weights are recomputed from the model as it then is
    assert len({round(h["resample_ess"], 6) for h in history}) == len(history)
    later = history[1:]  # epoch 1 draws by the weights of the untrained model
    share = sum(h["resample_rarest_share"] for h in later) / len(later)
    uniform, draws = RARE / N, N * len(later)
    sd = math.sqrt(uniform * (1 - uniform) / draws)  # the share's sd under uniform sampling
    # measured (pytest -s prints it): 21.0%, 47.4%, 13.3% against 3.0%: 53, 130, 30 sd;
    # the margin asked: 3x uniform and 20 sd
    print(f"seeds {data_seed},{seed}: rare class {share:.1%} of the draws (uniform "
          f"{uniform:.1%}), {(share - uniform) / sd:.0f} sd above")
    assert share > max(3 * uniform, uniform + 20 * sd), (share, uniform, sd)
    weight = sum(h["resample_rarest_weight"] for h in later) / len(later)
    assert weight > 3 * uniform  # the weights themselves, not only the draws


def test_uniform_minibatches_unless_resample_is_set():
    data = _rare_class_case()
    model = build_model("dbvae", data.shape, latent_dim=2, hidden=(8,), num_classes=CLASSES)
    same, hooks = training_data(data, model, TrainConfig(device="cpu"))
    assert same is data and hooks == []
    adaptive, hooks = training_data(data, model, TrainConfig(device="cpu", resample="aggregate"))
    assert isinstance(adaptive, AdaptiveResampledDataset) and len(hooks) == 1
    model.train()
    perm = adaptive.permutation()
    assert model.training  # the weights' forward pass leaves the training mode as it was
    assert perm.shape == (N,) and adaptive.weights.sum().item() == pytest.approx(1.0)


def _config(epochs: int) -> RunConfig:
    return RunConfig.for_model(
        "dbvae", dataset="digits", latent_dim=2, hidden=(16,),
        train={"epochs": epochs, "batch_size": 128, "device": "cpu", "seed": 3,
               "resample": "histogram", "resample_alpha": 0.05},
        eval={"num_samples": 0, "pictures": False})


def test_a_resumed_resampled_run_equals_an_uninterrupted_one(tmp_path):
    straight = run(_config(3), tmp_path / "a", progress=False)
    run(_config(1), tmp_path / "b", progress=False)
    resumed = resume(tmp_path / "b", epochs=3, progress=False)
    a, b = straight.run.model.state_dict(), resumed.run.model.state_dict()
    assert_identical(a, b, "model state")
    drop = {"seconds"}
    strip = [{k: v for k, v in h.items() if k not in drop} for h in straight.training.history]
    again = [{k: v for k, v in h.items() if k not in drop} for h in resumed.training.history]
    assert strip == again and "resample_rarest_share" in strip[-1]


@pytest.mark.parametrize("flags, says", [
    (["--resample", "sometimes"], "resample"),
    (["--resample", "histogram", "--resample-alpha", "0"], "resample-alpha"),
    (["--resample", "histogram", "--resample-bins", "0"], "resample-bins"),
    (["--class-weight", "-1"], "class_weight"),
])
def test_bad_flags_are_one_line_and_exit_2(flags, says, tmp_path, capsys):
    code = main(["train", "dbvae", "--dataset", "digits", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not (tmp_path / "r").exists()


def test_the_examples_joint_recipe_runs_both_ways(tmp_path):
    """examples/debias.py --recipe joint, tiny: a uniform and a resampled dbvae run per seed,
    the thinned class found as the rarest one, accuracies in [0, 1]."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "debias.py"
    spec = importlib.util.spec_from_file_location("example_debias_joint", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.main(["--recipe", "joint", "--keep", "0.3", "--thin-class", "8", "--epochs",
                         "1", "--latent-dim", "2", "--hidden", "16", "--seeds", "0",
                         "--out", str(tmp_path / "out")])
    assert [r["minibatches"] for r in rows] == ["uniform", "histogram alpha 0.1"]
    assert rows[0]["share"] == pytest.approx(121 / 3766)
    assert all(0 <= r["class_accuracy"] <= 1 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert (tmp_path / "out" / "joint-histogram-seed0" / "history.csv").is_file()
    explained = example.main(["--explain", str(tmp_path / "out" / "joint-none-seed0")])
    assert [r["class"] for r in explained] == list(range(10))
    assert sum(r["weight"] for r in explained) == pytest.approx(1.0)
    assert explained[8]["share"] == pytest.approx(121 / 3766)
