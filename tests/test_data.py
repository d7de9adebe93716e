import numpy as np
import pytest
import torch

from pyro_vae import data as data_mod
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, DataError


def test_mnist_5k_split_is_stratified_and_deterministic():
    d = load_dataset("mnist-5k")
    assert d.shape == (1, 28, 28)
    assert d.num_train == 4500 and d.test_x.shape[0] == 500
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 450))
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 50))
    again = load_dataset("mnist-5k")
    assert torch.equal(d.test_x, again.test_x) and torch.equal(d.train_x, again.train_x)
    # train holds grey values (re-binarized per batch), test is binarized once
    assert ((d.train_x > 0) & (d.train_x < 1)).any()
    assert set(d.test_x.unique().tolist()) == {0.0, 1.0}


def test_split_is_disjoint():
    raw = data_mod._load_mnist_5k()
    train = {row.tobytes() for row in raw.train_x.reshape(len(raw.train_x), -1)}
    test = [row.tobytes() for row in raw.test_x.reshape(len(raw.test_x), -1)]
    assert sum(row in train for row in test) == 0


def test_dynamic_binarization_redraws_with_the_right_mean():
    d = load_dataset("digits")
    grey = d.train_x[:64]
    draws = torch.stack([torch.bernoulli(grey) for _ in range(400)])
    # E[Bernoulli(p)] = p, standard error sqrt(p(1-p)/400) <= 0.025
    assert (draws.mean(0) - grey).abs().max() < 5 * 0.025
    x1, _ = next(d.batches(len(d.train_x)))
    assert set(x1.unique().tolist()) <= {0.0, 1.0}


def test_batches_cover_distinct_points_each_epoch():
    d = load_dataset("digits", binarize="none")
    seen = torch.cat([x.flatten(1) for x, _ in d.batches(100)])
    assert len(seen) == 100 * (d.num_train // 100)
    assert len(torch.unique(seen, dim=0)) >= len(seen) - 5  # a few duplicate digits exist


@pytest.mark.parametrize("binarize", ["fixed", "none"])
def test_fixed_and_none_binarization(binarize):
    d = load_dataset("digits", binarize=binarize)
    binary = set(d.train_x.unique().tolist()) <= {0.0, 1.0}
    assert binary == (binarize == "fixed")
    assert torch.equal(d.train_x, load_dataset("digits", binarize=binarize).train_x)


def test_linear_gaussian_is_real_valued_and_refuses_binarization():
    d = load_dataset("linear-gaussian")
    assert d.binarize == "none" and d.shape == (10,)
    with pytest.raises(ConfigError, match="real valued"):
        load_dataset("linear-gaussian", binarize="dynamic")


@pytest.mark.parametrize("name,kwargs,match", [
    ("nope", {}, "unknown data set 'nope'"),
    ("digits", {"binarize": "sometimes"}, "unknown binarization"),
])
def test_bad_names(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset(name, **kwargs)


def test_download_failure_is_one_clear_line(monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried ...")

    monkeypatch.setattr(tvd, "MNIST", offline)
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "\n" not in message and "mnist-5k" in message and str(tmp_path) in message


def test_stratified_split_helper_is_seed_independent():
    y = np.repeat(np.arange(3), 10)
    a = data_mod._stratified_split(y, 2)
    torch.manual_seed(123)
    np.random.seed(5)
    b = data_mod._stratified_split(y, 2)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
