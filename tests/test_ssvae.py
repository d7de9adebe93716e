"""ssvae (M2): the contract, the enumerated bound against the labelled ones, the labelled split,
a short semi-supervised training, sample --label, bad flags; the M1 helpers."""

import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from pyro_vae import build_model, load_dataset
from pyro_vae.classifier import conditional_sample_accuracy, train_classifier
from pyro_vae.cli import main
from pyro_vae.data import UNLABELLED, DataConfig, keep_labels
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.metrics import check_keys
from pyro_vae.runner import open_run
from pyro_vae.semi_supervised import labelled_points, pixel_accuracy
from pyro_vae.testing import check_model_guide


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small(digits, **settings):
    return build_model("ssvae", digits.shape, **{"latent_dim": 3, "hidden": (16,), **settings})


def test_ssvae_passes_the_checks_with_and_without_labels(digits):
    model = small(digits)
    x, y = digits.test_x[:8], digits.test_y[:8].clone()
    assert check_model_guide(model, x) == []  # unlabelled: y enumerated / drawn from q(y|x)
    assert check_model_guide(model, x, y) == []  # labelled
    y[::2] = UNLABELLED
    assert check_model_guide(model, x, y) == []  # mixed minibatch


def _labelled_elbos(model, x, C):
    """Per-class labelled bounds L(x, c) (log p(y) included), every class at once: x repeated C
    times with labels 0..C-1, z drawn from q(z | x, c) (the draw the enumeration makes under the
    same seed: one (C, d) standard normal)."""
    xs, ys = x.expand(C, *x.shape[1:]), torch.arange(C)
    guide = poutine.trace(poutine.condition(model.guide, data={"y": ys})).get_trace(xs, ys)
    conditioned = poutine.condition(model.model, data={"y": ys})
    tr = poutine.trace(poutine.replay(conditioned, trace=guide)).get_trace(xs, ys)
    tr.compute_log_prob()
    guide.compute_log_prob()
    return (tr.nodes["y"]["log_prob"] + tr.nodes["z"]["log_prob"] + tr.nodes["x"]["log_prob"]
            - guide.nodes["z"]["log_prob"])


@pytest.mark.parametrize("optimal", [False, True], ids=["trained-q", "q-softmax-of-L"])
def test_enumerated_bound_is_the_labelled_bounds_weighted_by_q(digits, optimal, monkeypatch):
    """On one unlabelled point, TraceEnum_ELBO's bound equals Kingma's eq. 7,
    -U(x) = sum_c q(c|x) L(x, c) + H(q(y|x)), with L(x, c) the labelled bound (eq. 6, log p(y)
    included) at the same z draws. With q(y|x) = softmax_c L(x, c) it equals
    logsumexp_c L(x, c), the largest value any q(y|x) gives."""
    model = small(digits, aux_weight=0.0)
    x, C = torch.bernoulli(digits.test_x[:1]), model.num_classes
    pyro.set_rng_seed(3)
    labelled = _labelled_elbos(model, x, C).detach()
    if optimal:
        monkeypatch.setattr(model, "class_logits", lambda x: labelled.expand(x.shape[0], C))
    log_q = torch.log_softmax(model.class_logits(x), -1)[0].detach()
    pyro.set_rng_seed(3)
    enumerated = -TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    expected = (log_q.exp() * (labelled - log_q)).sum().item()
    assert enumerated == pytest.approx(expected, abs=1e-3)
    if optimal:
        assert enumerated == pytest.approx(torch.logsumexp(labelled, 0).item(), abs=1e-3)
    else:
        assert enumerated < torch.logsumexp(labelled, 0).item() - 1e-3


def test_a_known_label_makes_the_labelled_bound_plus_the_aux_term(digits):
    """A labelled point's enumerated bound is L(x, y) + aux_weight * log q(y | x)."""
    model = small(digits, aux_weight=2.5)
    x, y = torch.bernoulli(digits.test_x[:1]), digits.test_y[:1]
    pyro.set_rng_seed(4)
    labelled = _labelled_elbos(model, x, model.num_classes)[y].item()
    log_q = torch.log_softmax(model.class_logits(x), -1)[0, y].item()
    # the enumerated guide draws z for every class; the known one is row y of that draw
    pyro.set_rng_seed(4)
    bound = -TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x, y)
    assert bound == pytest.approx(labelled + 2.5 * log_q, abs=1e-3)


def test_labels_per_class_keeps_exactly_n_per_class_seeded(digits):
    data = load_dataset("digits", options=DataConfig(labels_per_class=7, label_seed=3))
    kept = data.train_y >= 0
    assert kept.sum().item() == 70
    assert torch.bincount(data.train_y[kept], minlength=10).tolist() == [7] * 10
    assert torch.equal(data.train_y[kept], digits.train_y[kept])  # the labels are the true ones
    assert set(data.train_y[~kept].tolist()) == {UNLABELLED}
    again = load_dataset("digits", options=DataConfig(labels_per_class=7, label_seed=3))
    other = load_dataset("digits", options=DataConfig(labels_per_class=7, label_seed=4))
    assert torch.equal(again.train_y, data.train_y)
    assert not torch.equal(other.train_y, data.train_y)
    assert torch.equal(data.test_y, digits.test_y)  # test labels all kept
    x, y = labelled_points(data)
    assert len(x) == len(y) == 70
    with pytest.raises(DataError, match="class 0 .* has only"):
        keep_labels(digits.train_y.numpy(), 10_000)
    with pytest.raises(DataError, match="needs labels"):
        keep_labels(None, 3)
    with pytest.raises(ConfigError, match="labels-per-class must be at least 1"):
        DataConfig(labels_per_class=0)


def test_m2_learns_to_classify_digits_and_draws_the_asked_class(tmp_path, capsys):
    """Ten labels per class of the 8x8 digits: a short training takes q(y|x) far above chance
    (0.1); the run records the split and reopens it; sample --label draws digits an
    independent classifier reads as the asked class more often than chance."""
    run = tmp_path / "m2"
    assert main(["train", "ssvae", "--dataset", "digits", "--labels-per-class", "10",
                 "--label-seed", "1", "--epochs", "30", "--batch-size", "64", "--hidden", "128",
                 "--latent-dim", "2", "--aux-weight", "300", "--eval-samples", "0",
                 "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy [q(y|x)]" in out
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["labels_per_class"] == 10 and config["data"]["label_seed"] == 1
    assert config["train"]["objective"] == "enum"
    metrics = json.loads((run / "metrics.json").read_text())
    check_keys(metrics)
    assert metrics["test_accuracy"] > 0.5
    opened = open_run(run)
    assert (opened.data.train_y >= 0).sum().item() == 100  # the same split, reopened
    assert pixel_accuracy(opened.data) > 0.5
    assert main(["sample", str(run), "--label", "4", "--num", "9",
                 "--out", str(tmp_path / "four.png")]) == 0
    assert (tmp_path / "four.png").is_file()
    clf = train_classifier(load_dataset("digits"), epochs=5)
    drawn = conditional_sample_accuracy(opened.model, clf, num=200)
    assert drawn["accuracy"] > 0.3
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == ("pyro-vae: error: --label must be a class in "
                                               "0..9, got 10")
    assert main(["train", "--resume", "--out", str(run), "--epochs", "31",
                 "--labels-per-class", "5", "--no-progress"]) == 2  # a run keeps its split
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels-per-class 5 differs from the run's 10" in err


@pytest.mark.parametrize("flags, message", [
    (["--labels-per-class", "0"], "labels-per-class must be at least 1, got 0"),
    (["--labels-per-class", "500"], "--labels-per-class 500: class 0 of digits has only"),
    (["--aux-weight", "-1"], "aux_weight"),
    (["--dataset", "linear-gaussian", "--labels-per-class", "2"], "needs labels"),
], ids=["zero", "too-many", "negative-aux", "no-labels"])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    args = ["train", "ssvae", "--dataset", "digits", "--epochs", "1", "--hidden", "8",
            "--latent-dim", "2", "--out", str(tmp_path / "r"), "--no-progress", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_the_analogies_decode_one_style_with_every_class(digits):
    model = small(digits).eval()
    images = model.analogies(digits.test_x[:4])
    assert images.shape == (4, 10, *digits.shape)
    assert math.isclose(images.min().item(), 0.0, abs_tol=1.0) and images.max() <= 1
    assert not torch.allclose(images[:, 0], images[:, 1])  # the class changes the picture


def test_the_accuracy_evaluation_is_keyed_on_the_capability(digits):
    """The ``classifier`` evaluation applies to a model with ``has_classifier`` and a test split
    with labels, and says why not otherwise."""
    from pyro_vae.metrics import EVALUATIONS

    evaluation = EVALUATIONS["classifier"]
    model = small(digits)
    assert evaluation.applies(model, digits, None, []) is None
    accuracy = evaluation.compute(model, digits, None, False)["test_accuracy"]
    assert accuracy == pytest.approx((model.classify(digits.test_x) == digits.test_y)
                                     .double().mean().item())
    vae = build_model("vae", digits.shape, latent_dim=2, hidden=(8,))
    assert "no classifier" in evaluation.applies(vae, digits, None, [])


def test_labels_out_of_range_are_one_line_before_training(capsys, tmp_path):
    """A label >= --num-classes would silently give a uniform q(y|x) inside the programs: the
    labels are checked once, with the data, before any step (and -1 is pyro_vae.data's mark)."""
    from pyro_vae import data as data_mod
    from pyro_vae.cli import main
    from pyro_vae.models import labels as labels_mod  # ssvae's and dbvae's mark

    assert labels_mod.UNLABELLED == data_mod.UNLABELLED
    code = main(["train", "ssvae", "--dataset", "digits", "--num-classes", "5", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "16", "--no-progress", "--eval-samples", "0",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "the training labels must be" in err and "0..4" in err
    assert not (tmp_path / "run").exists()  # a new run that fails leaves nothing
