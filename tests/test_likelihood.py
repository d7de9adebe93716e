"""Exact, prior-sampling and importance-sampling log p(x) on models with known marginals."""

import math

import pytest
import torch

from pyro_vae import build_model, load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.likelihood import estimate_log_likelihood, prior_log_weights, stderr_ratios
from pyro_vae.models.gmm import GMM, GMMConfig


@pytest.fixture
def pca():
    data = load_dataset("linear-gaussian")
    model = build_model("linear", data.shape)
    with torch.no_grad():  # near the data, guide a little off the exact posterior
        model.b.copy_(data.train_x.mean(0))
        model.W.copy_(torch.linalg.svd(data.train_x - model.b).Vh[:2].T * 20)
        model.set_guide_to_posterior()
        model.A.mul_(0.8)
    return model, data.test_x[:20]


def test_both_estimates_converge_to_the_closed_form_and_is_has_smaller_error(pca):
    model, x = pca
    res = estimate_log_likelihood(model, x, ks=(1, 10, 100, 1000), replicates=4)
    rows = {(r["method"], r["k"]): r for r in res["rows"]}
    exact = model.log_marginal(x).mean().item()
    assert res["exact"] == pytest.approx(exact)
    for method in ("prior", "importance"):
        big = rows[(method, 1000)]
        # E log p_K <= log p(x) up to Monte Carlo error, and the gap at K = 1000 is within a
        # few times the spread of one K-sample estimate
        assert big["estimate"] <= exact + 4 * big["mc_stderr"]
        assert abs(big["error"]) < 5 * big["mc_sd"]
        errors = [rows[(method, k)]["error"] for k in (1, 10, 100, 1000)]
        assert errors[0] < errors[-1]  # the bias shrinks with K (Jensen)
    assert all(r > 3 for r in stderr_ratios(res).values())


def test_prior_sampling_is_unbiased_in_probability_on_the_gmm():
    model = GMM(GMMConfig(3), (2,))
    x = torch.tensor([[0.5, -0.3]])
    w = prior_log_weights(model, x, num_particles=20000)[:, 0].double().exp()
    exact = model.log_marginal(x).exp().item()
    assert w.mean().item() == pytest.approx(exact, abs=4 * w.std().item() / math.sqrt(len(w)))


def test_importance_sampling_with_the_exact_posterior_guide_is_exact():
    model = GMM(GMMConfig(3), (2,))
    x = torch.randn(30, 2) * 2
    res = estimate_log_likelihood(model, x, ks=(1, 5), replicates=3)
    for r in res["rows"]:
        if r["method"] == "importance":
            assert r["error"] == pytest.approx(0.0, abs=1e-5)
            assert r["mc_sd"] < 1e-5 and r["mc_stderr"] < 1e-5
    assert stderr_ratios(res) == {}


def test_bad_k_lists_are_refused(pca):
    model, x = pca
    with pytest.raises(ConfigError, match="divide"):
        estimate_log_likelihood(model, x, ks=(3, 10))
    with pytest.raises(ConfigError):
        estimate_log_likelihood(model, x, ks=(0, 10))
