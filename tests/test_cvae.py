"""cvae: both tasks pass the contract checks; exact masked likelihood; labels; the classifier."""

import copy
import math

import pytest
import torch

from pyro_vae import TrainConfig, build_model, load_dataset, train
from pyro_vae.classifier import accuracy, conditional_sample_accuracy, train_classifier
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.evaluate import log_weights
from pyro_vae.models.cvae import quadrant_mask
from pyro_vae.testing import check_model_guide
from pyro_vae.train import check_data


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("task", ["label", "quadrants"])
def test_cvae_passes_the_checks(digits, task, arch):
    model = build_model("cvae", digits.shape, task=task, arch=arch, latent_dim=4, hidden=(32,))
    assert check_model_guide(model, digits.test_x[:8], digits.test_y[:8]) == []
    assert model.is_conditional == (task == "label")


@pytest.mark.parametrize("q", [1, 2, 3])
def test_quadrant_mask_covers_q_quarters(q):
    mask = quadrant_mask((1, 28, 28), q)
    assert mask.sum().item() == q * 14 * 14
    assert mask[0, 0, 0] and not mask[0, 27, 27]


@pytest.mark.parametrize("q", [1, 2, 3])
def test_quadrant_likelihood_scores_only_the_missing_pixels(digits, q):
    """With zero logits every pixel has probability 1/2, so log p(missing | z, observed) is
    exactly -(number of missing pixels) * log 2, whatever the image."""
    model = build_model("cvae", digits.shape, task="quadrants", observed_quadrants=q,
                        latent_dim=3, hidden=(16,))
    last = model.decoder.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x = digits.test_x[:5]
    from pyro import poutine

    trace = poutine.trace(model.model).get_trace(x)
    trace.compute_log_prob()
    missing = 64 - q * 16
    expected = torch.full((5,), -missing * math.log(2))
    assert torch.allclose(trace.nodes["x"]["log_prob"], expected, atol=1e-5)


def test_label_task_needs_valid_labels(digits):
    model = build_model("cvae", digits.shape, latent_dim=3, hidden=(16,))
    x = digits.test_x[:4]
    with pytest.raises(DataError, match="needs labels"):
        model.model(x)
    with pytest.raises(DataError, match="0..9"):  # checked with the data, not at every step
        model.check_labels(torch.tensor([0, 1, 2, 10]), 4)
    with pytest.raises(DataError, match="0..9"):
        model.guide(x, torch.tensor([0, 1, 2]))  # the shape is still checked by the programs
    bad = copy.copy(digits)
    bad.train_y = digits.train_y.clone()
    bad.train_y[5] = -1
    with pytest.raises(DataError, match="the training labels must be .* in 0..9"):
        check_data(model, bad)
    assert model.sample(6, torch.tensor(7)).shape == (6, 1, 8, 8)


def test_conditioning_on_the_label_changes_the_likelihood(digits):
    """log p(x, z | y) - log q(z | x, y) depends on y once trained: the true label scores
    higher than a wrong one on average (paired, same model)."""
    model = build_model("cvae", digits.shape, latent_dim=4, hidden=(64,))
    train(model, digits, TrainConfig(epochs=10), progress=False)
    x, y = digits.test_x, digits.test_y
    right = log_weights(model, x, y, 20).logsumexp(0)
    wrong = log_weights(model, x, (y + 1) % 10, 20).logsumexp(0)
    assert (right > wrong).double().mean().item() > 0.8


def test_generated_digits_are_recognised_as_the_asked_class(digits):
    """The must-hold check on a small budget: a classifier trained on the training split
    labels at least 80% of 1,000 class-conditional samples as the asked class."""
    model = build_model("cvae", digits.shape, latent_dim=4, hidden=(128,))
    train(model, digits, TrainConfig(epochs=40), progress=False)
    clf = train_classifier(digits, epochs=15)
    assert accuracy(clf, digits.test_x, digits.test_y) > 0.75  # binarized 8x8 test digits
    result = conditional_sample_accuracy(model, clf, num=1000)
    assert result["num"] == 1000 and set(result["per_class"]) == set(range(10))
    assert result["accuracy"] >= 0.8


def test_conditional_sample_accuracy_refuses_unconditional_models(digits):
    clf = train_classifier(digits, epochs=1)
    with pytest.raises(ConfigError, match="by class"):
        conditional_sample_accuracy(build_model("vae", digits.shape, latent_dim=2), clf)


def test_sample_label_on_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cvae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--eval-samples", "50", "--out", str(run),
                 "--no-progress"]) == 0
    assert (run / "class_samples.png").is_file()
    assert main(["sample", str(run), "--label", "7", "--num", "9",
                 "--out", str(tmp_path / "seven.png")]) == 0
    assert (tmp_path / "seven.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == ("pyro-vae: error: --label must be a class in "
                                               "0..9, got 10")
    other = tmp_path / "vae"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--eval-samples", "0", "--out", str(other), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(other), "--label", "3", "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a model that generates by class" in err
    assert not (tmp_path / "y.png").exists()


def test_the_classifier_leaves_every_generator_alone(digits, monkeypatch):
    """Reproducible from its seed; the CPU stream is the same after it; no CUDA generator is
    seeded (``torch.manual_seed`` would reseed every GPU's, which ``fork_rng(devices=[])``
    does not put back)."""
    seeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append(seed))
    torch.manual_seed(1)
    seeded.clear()
    state = torch.get_rng_state()
    a = train_classifier(digits, epochs=1, seed=3)
    assert torch.equal(torch.get_rng_state(), state) and seeded == []
    b = train_classifier(digits, epochs=1, seed=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
