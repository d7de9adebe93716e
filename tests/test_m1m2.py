"""Stacked M1+M2 (Kingma et al. 2014): a run's codes exported with its own split and labels
(pyro_vae.semi_supervised.export_codes), an .npz with its own test split, and the ssvae on
real-valued (N, D) data with a Gaussian likelihood."""

import numpy as np
import pytest
import torch

from pyro_vae import EvalConfig, RunConfig, run
from pyro_vae.cli import main
from pyro_vae.data import UNLABELLED, DataConfig, load_dataset
from pyro_vae.errors import DataError
from pyro_vae.evaluate import latent_means
from pyro_vae.models import build_model
from pyro_vae.semi_supervised import export_codes, labelled_points
from pyro_vae.testing import check_model_guide

QUIET = EvalConfig(num_samples=0, pictures=False)


@pytest.fixture(scope="module")
def m1(tmp_path_factory):
    """A small vae on the 8x8 digits with 4 labels per class (label seed 2), and its codes."""
    root = tmp_path_factory.mktemp("m1m2")
    config = RunConfig.for_model("vae", dataset="digits", hidden=(32,), latent_dim=4,
                                 data={"labels_per_class": 4, "label_seed": 2},
                                 train={"epochs": 2, "seed": 0}, eval=QUIET)
    result = run(config, root / "vae", progress=False)
    return result.run, export_codes(result.run, root / "codes.npz")


def test_exported_codes_keep_the_runs_split_and_labelled_points(m1):
    vae, path = m1
    options = DataConfig(labels_per_class=4, label_seed=2)
    codes = load_dataset(str(path), options=options)
    pixels = load_dataset("digits", options=options)  # the pixel runs' and baselines' data
    assert codes.kind == "real" and codes.binarize == "none" and codes.shape == (4,)
    # the same points in the same order: every code is the guide's mean of that digit
    assert torch.allclose(codes.train_x, latent_means(vae.model, pixels.train_eval_x()),
                          atol=1e-6)
    assert torch.allclose(codes.test_x, latent_means(vae.model, pixels.test_x), atol=1e-6)
    # the same labelled digits (and the same unlabelled ones), all test labels
    assert torch.equal(codes.train_y, pixels.train_y)
    assert torch.equal(codes.test_y, pixels.test_y)
    assert int((codes.train_y != UNLABELLED).sum()) == 40
    x_codes, y_codes = labelled_points(codes)
    x_pixels, y_pixels = labelled_points(pixels)
    assert torch.equal(y_codes, y_pixels)
    assert torch.allclose(x_codes, latent_means(vae.model, x_pixels), atol=1e-6)
    # the file holds every label; another label seed keeps other points, as on the pixels
    with np.load(path) as arrays:
        assert (arrays["y"] >= 0).all() and len(arrays["y"]) == vae.data.num_train
    other = DataConfig(labels_per_class=4, label_seed=3)
    assert torch.equal(load_dataset(str(path), options=other).train_y,
                       load_dataset("digits", options=other).train_y)
    assert not torch.equal(load_dataset(str(path), options=other).train_y, codes.train_y)


def _clusters(path, seed=0, dim=6, classes=3, per_class=100):
    """Gaussian clusters in R^dim, one per class, written as an .npz with its own split."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.standard_normal((classes, dim))

    def draw(n):
        y = np.repeat(np.arange(classes), n)
        return (means[y] + rng.standard_normal((len(y), dim))).astype(np.float32), y

    x, y = draw(per_class)
    x_test, y_test = draw(per_class // 2)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path


def test_ssvae_takes_real_vectors_with_a_gaussian_likelihood(tmp_path):
    data = load_dataset(str(_clusters(tmp_path / "c.npz")))
    assert data.shape == (6,) and data.kind == "real" and len(data.test_x) == 150
    model = build_model("ssvae", data.shape, hidden=(16,), latent_dim=2, num_classes=3,
                        likelihood="gaussian")
    x, y = data.test_x[:8], data.test_y[:8].clone()
    assert check_model_guide(model, x) == []
    y[::2] = UNLABELLED
    assert check_model_guide(model, x, y) == []


def test_ssvae_on_codes_classifies_above_chance_from_a_few_labels(tmp_path):
    path = _clusters(tmp_path / "c.npz")
    config = RunConfig.for_model("ssvae", dataset=str(path), hidden=(32,), latent_dim=2,
                                 num_classes=3, likelihood="gaussian", aux_weight=500.0,
                                 data={"labels_per_class": 5, "label_seed": 0},
                                 train={"epochs": 30, "seed": 0, "batch_size": 32}, eval=QUIET)
    result = run(config, tmp_path / "m2", progress=False)
    # chance: 1/3, from 15 labels among 300 points (0.97-1.0 for cluster seeds 0, 1, 2; with
    # aux weight 50 or 3 labels per class it found the clusters but named them wrongly: 0.0)
    assert result.metrics["test_accuracy"] > 0.8


def _bad(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


X = np.zeros((20, 3), np.float32)
Y = np.arange(20) % 2


@pytest.mark.parametrize("arrays, message", [
    (dict(x=X, y=Y, y_test=Y[:4]), "y_test but no x_test"),
    (dict(x=X, y=Y, x_test=np.zeros((4, 5), np.float32), y_test=Y[:4]), "must match"),
    (dict(x=X, y=Y, x_test=X[:4]), "both splits"),
    (dict(x=X, y=Y, x_test=X[:4], y_test=Y[:3]), "y_test has 3 labels for 4 points"),
    (dict(x=X, x_test=np.full((4, 3), np.nan, np.float32)), "x_test holds NaN"),
])
def test_a_bad_split_in_an_npz_is_one_line_and_exit_2(tmp_path, capsys, arrays, message):
    code = main(["train", "ssvae", "--dataset", str(_bad(tmp_path, **arrays)), "--likelihood",
                 "gaussian", "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_export_refuses_a_file_that_is_not_npz_and_data_without_labels(m1, tmp_path):
    vae, _ = m1
    with pytest.raises(DataError, match="an .npz file"):
        export_codes(vae, tmp_path / "codes.csv")
    config = RunConfig.for_model("vae", dataset="linear-gaussian", hidden=(8,), latent_dim=2,
                                 likelihood="gaussian", train={"epochs": 1}, eval=QUIET)
    unlabelled = run(config, tmp_path / "lg", progress=False)
    with pytest.raises(DataError, match="no labels"):
        export_codes(unlabelled.run, tmp_path / "codes.npz")
    assert not (tmp_path / "codes.npz").exists()


def test_the_example_reuses_finished_runs_of_the_same_settings_only(tmp_path):
    import importlib.util
    from pathlib import Path

    from pyro_vae.errors import ConfigError

    path = Path(__file__).parent.parent / "examples" / "semi_supervised.py"
    spec = importlib.util.spec_from_file_location("example_semi_supervised_m1m2", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--dataset", "digits", "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
            "--seeds", "0", "--labels-per-class", "3", "--m1m2-hidden", "8",
            "--m1m2-latent-dim", "2", "--classifiers", "logistic", "--out", str(tmp_path)]
    first = example.main(argv)
    stamp = (tmp_path / "m1m2-0" / "checkpoint.pt").stat().st_mtime_ns
    assert example.main(argv + ["--reuse"]) == first  # nothing trained again
    assert (tmp_path / "m1m2-0" / "checkpoint.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other model config settings"):
        example.main(argv + ["--reuse", "--m1m2-aux-weight", "7"])
