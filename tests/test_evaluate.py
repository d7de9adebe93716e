import math

import pytest
import torch

from pyro_vae.annealing import LatentScaleMessenger
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import evaluate, importance_bounds, latent_usage, log_weights
from pyro_vae.models import build_model
from pyro_vae.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained_ppca():
    """Probabilistic PCA fitted briefly by SVI: a guide close to, not at, the posterior."""
    data = load_dataset("linear-gaussian")
    model = build_model("linear", data.shape)
    train(model, data, TrainConfig(epochs=15, batch_size=100, lr=3e-2), progress=False)
    return model, data


def test_importance_sampled_log_px_matches_the_closed_form(trained_ppca):
    model, data = trained_ppca
    x = data.test_x[:200]
    b = importance_bounds(model, x, num_samples=5000)
    exact = model.log_marginal(x).detach()
    s = b.summary()
    # mean over points: within 3 Monte Carlo standard errors of the exact value
    assert abs(s["log_likelihood"] - exact.mean().item()) < 3 * s["log_likelihood_mc_stderr"]
    # and the gap is real: the ELBO is well below
    assert exact.mean().item() - s["elbo"] > 10 * s["log_likelihood_mc_stderr"]
    # per point, z-scores look like a standard normal's (no point is far off)
    z = (b.log_px - exact) / b.log_px_mc_stderr
    assert z.abs().max() < 5


def test_estimates_are_ordered_per_point(trained_ppca):
    model, data = trained_ppca
    b = importance_bounds(model, data.test_x[:100], num_samples=1000, ks=(5, 50))
    assert torch.all(b.elbo <= b.iwae[5] + 1e-4)
    assert torch.all(b.iwae[5] <= b.iwae[50] + 1e-4)
    assert torch.all(b.iwae[50] <= b.log_px + 1e-4)


def test_exact_posterior_guide_closes_every_gap(trained_ppca):
    model, data = trained_ppca
    exact_model = build_model("linear", data.shape)
    exact_model.load_state_dict(model.state_dict())
    exact_model.set_guide_to_posterior()
    x = data.test_x[:50]
    b = importance_bounds(exact_model, x, num_samples=100, ks=(5,))
    exact = exact_model.log_marginal(x).detach()
    for estimate in (b.elbo, b.iwae[5], b.log_px):
        assert torch.allclose(estimate, exact, atol=1e-3)
    assert b.log_px_mc_stderr.max() < 1e-3


def test_log_weights_ignore_training_scales():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=3, hidden=(16,))
    x = data.test_x[:10]
    torch.manual_seed(0)
    a = log_weights(model, x, num_particles=7)
    torch.manual_seed(0)
    with LatentScaleMessenger(["z"], 4.0):  # the training loop's KL weight (beta)
        b = log_weights(model, x, num_particles=7)
    assert a.shape == (7, 10) and torch.allclose(a, b)


def test_chunking_does_not_change_the_estimates():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=3, hidden=(16,))
    x = data.test_x[:40]
    torch.manual_seed(0)
    big = importance_bounds(model, x, num_samples=200, ks=(5, 50), max_elements=2**30)
    torch.manual_seed(0)
    small = importance_bounds(model, x, num_samples=200, ks=(5, 50), max_elements=2**14)
    # different chunking draws the samples in a different order: compare within MC error
    diff = (big.log_px - small.log_px).abs()
    assert torch.all(diff < 5 * (big.log_px_mc_stderr + small.log_px_mc_stderr) + 1e-3)


def test_active_units_and_kl_per_dim_on_a_model_with_a_dead_dimension():
    data = load_dataset("linear-gaussian")
    model = build_model("linear", data.shape)
    with torch.no_grad():
        model.W[:, 1] = 0.0  # z_1 does not reach x: its posterior is the prior
    model.set_guide_to_posterior()
    usage = latent_usage(model, data.test_x)
    assert usage.posterior_mean_variance[0] > 0.01
    assert usage.posterior_mean_variance[1] < 1e-8
    assert usage.active_units == 1


def test_vae_kl_per_dim_is_analytic_and_agrees_with_monte_carlo():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=4, hidden=(16,))
    x = data.test_x[:100]
    usage = latent_usage(model, x)
    assert usage.kl_is_per_dim and usage.kl_per_dim.shape == (4,)
    # Monte Carlo: E_q[log q - log p] from the traces
    from pyro_vae.evaluate import log_weights_of_site

    mc = log_weights_of_site(model, x, None, "z", 2000)
    est, se = mc.mean(0).mean().item(), (mc.std(0) / math.sqrt(2000)).mean().item()
    assert abs(usage.kl_per_dim.sum().item() - est) < 4 * se + 1e-4


def test_num_samples_must_fit_the_iwae_groups():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=2, hidden=(8,))
    with pytest.raises(ConfigError, match="multiple"):
        importance_bounds(model, data.test_x[:4], num_samples=120, ks=(5, 50))


def test_evaluate_reports_the_design_keys():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=2, hidden=(8,))
    m = evaluate(model, data.test_x[:20], num_samples=50)
    for key in ("test_elbo", "test_iwae", "iwae_k", "test_log_likelihood",
                "test_log_likelihood_stderr", "ll_num_samples", "active_units", "kl_per_dim"):
        assert key in m
    assert m["test_elbo"] <= m["test_iwae"] <= m["test_log_likelihood"]
