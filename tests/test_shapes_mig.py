"""The shapes data set (known factors) and the mutual information gap."""

import numpy as np
import pytest
import torch

from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import disentanglement, mutual_information_gap
from pyro_vae.models import build_model
from pyro_vae.shapes import FACTOR_NAMES, FACTOR_SIZES, factor_grid, render


def test_shapes_is_the_seeded_full_factor_grid():
    data = load_dataset("shapes")
    assert data.shape == (1, 32, 32) and data.num_train == 5120 and len(data.test_x) == 1024
    assert set(data.train_x.unique().tolist()) == {0.0, 1.0}  # binary, nothing to binarize
    assert torch.equal(data.test_x, load_dataset("shapes").test_x)
    assert data.factor_names == FACTOR_NAMES and data.test_factors.shape == (1024, 5)
    assert torch.equal(data.test_y, data.test_factors[:, 0])
    grid = factor_grid()
    assert len(np.unique(grid, axis=0)) == len(grid) == int(np.prod(FACTOR_SIZES))


def test_each_factor_changes_the_picture():
    base = np.array([[1, 2, 1, 3, 4]])
    image = render(base)
    for k, size in enumerate(FACTOR_SIZES):
        other = base.copy()
        other[0, k] = (other[0, k] + 1) % size
        assert not np.array_equal(render(other), image), FACTOR_NAMES[k]
    assert render(base, 64).shape == (1, 1, 64, 64) and render(base, 64).sum() > 0


def test_mig_is_one_for_factors_and_near_zero_for_noise():
    gen = torch.Generator().manual_seed(0)
    factors = torch.as_tensor(factor_grid()[torch.randperm(6144, generator=gen)[:2000]])
    exact = mutual_information_gap(factors.double() + 0.01 * torch.randn(2000, 5,
                                                                         generator=gen), factors)
    assert exact["mig"] > 0.95
    noise = mutual_information_gap(torch.randn(2000, 5, generator=gen), factors)
    assert noise["mig"] < 0.05
    # a factor carried by two dimensions has no gap; one split off from the others keeps its
    doubled = torch.cat([factors[:, :1], factors], 1).double()
    result = mutual_information_gap(doubled, factors, names=FACTOR_NAMES)
    assert result["mig_per_factor"]["shape"] == pytest.approx(0.0, abs=1e-9)
    assert result["mig_per_factor"]["x"] > 0.95


def test_mig_refuses_mismatched_shapes():
    with pytest.raises(ConfigError, match="MIG needs"):
        mutual_information_gap(torch.zeros(10, 2), torch.zeros(9, 3))


def test_disentanglement_only_for_data_with_factors():
    shapes, digits = load_dataset("shapes"), load_dataset("digits")
    model = build_model("vae", shapes.shape, latent_dim=3, hidden=(16,))
    metrics = disentanglement(model, shapes)
    assert 0 <= metrics["mig"] <= 1 and set(metrics["mig_per_factor"]) == set(FACTOR_NAMES)
    assert disentanglement(build_model("vae", digits.shape, latent_dim=3), digits) == {}
