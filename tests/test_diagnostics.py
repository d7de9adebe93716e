"""ArviZ diagnostics on both ArviZ lines (0.23 on Python 3.11, 1.x on 3.12)."""

import json

import numpy as np
import pytest
import torch

from pyro_vae import arviz_compat as azc
from pyro_vae import build_model, load_dataset
from pyro_vae.cli import main
from pyro_vae.diagnostics import guide_inference_data, guide_khat, idata_values
from pyro_vae.models.gmm import GMM, GMMConfig
from pyro_vae.reference import (
    compare_posteriors,
    gmm_guide_draws,
    gmm_nuts_reference,
    latent_nuts_reference,
)


@pytest.fixture
def pca():
    """Probabilistic PCA near the linear-gaussian data, guide at the exact posterior."""
    data = load_dataset("linear-gaussian")
    model = build_model("linear", data.shape)
    with torch.no_grad():
        model.b.copy_(data.train_x.mean(0))
        model.W.copy_(torch.linalg.svd(data.train_x - model.b).Vh[:2].T * 20)
        model.raw_sigma.fill_(0.0)
        model.set_guide_to_posterior()
    return model, data.test_x[:12]


def test_guide_draws_become_inference_data_with_four_groups(pca, tmp_path):
    model, x = pca
    data = guide_inference_data(model, x, num_draws=200, ppc_draws=10)
    assert set(azc.group_names(data)) == {"posterior", "posterior_predictive",
                                         "log_likelihood", "observed_data"}
    z = idata_values(data, "z")
    assert z.shape == (1, 200, 12, 2)
    assert idata_values(data, "x", "posterior_predictive").shape == (1, 10, 12, 10)
    # log_likelihood holds log p(x_n | z) at the drawn z, exactly
    loc = torch.as_tensor(z[0]) @ model.W.T + model.b
    expect = torch.distributions.Normal(loc, model.sigma).log_prob(x).sum(-1)
    np.testing.assert_allclose(idata_values(data, "x", "log_likelihood")[0],
                               expect.detach().numpy(), rtol=1e-4, atol=1e-4)
    path = azc.to_netcdf(data, tmp_path / "post.nc")
    np.testing.assert_allclose(idata_values(azc.from_netcdf(path), "z"), z)


@pytest.mark.parametrize("k", [0.2, 0.9])
def test_psis_khat_recovers_a_known_pareto_tail(k):
    rng = np.random.default_rng(0)
    u = rng.uniform(size=(3, 4000))
    log_ratios = -k * np.log(u)  # w = u^-k: a generalized Pareto tail with shape k
    khat = azc.psis_khat(log_ratios)
    assert khat.shape == (3,)
    np.testing.assert_allclose(khat, k, atol=0.15)


def test_khat_separates_a_good_guide_from_an_overconfident_one(pca):
    model, x = pca
    exact = guide_khat(model, x, num_draws=200)
    assert np.isneginf(exact).all()  # the guide is the posterior: every weight is p(x)
    with torch.no_grad():
        model.A.mul_(0.9)  # a little off
    good = guide_khat(model, x, num_draws=1000)
    assert (good < 0.5).all()
    with torch.no_grad():
        model.raw_tril.diagonal().sub_(3.0)  # scale ~ e^-3 of the posterior's: too narrow
    bad = guide_khat(model, x, num_draws=1000)
    assert (bad > 0.7).mean() > 0.8


def test_summary_has_the_same_columns_on_both_lines():
    rng = np.random.default_rng(1)
    draws = rng.normal(2.0, 3.0, size=(2, 500, 2))
    table = azc.summary(azc.from_dict({"posterior": {"a": draws}}))
    assert list(table.columns) == azc.SUMMARY_COLUMNS
    np.testing.assert_allclose(table["mean"], draws.reshape(-1, 2).mean(0), atol=1e-3)
    assert (table["hdi_low"] < table["mean"]).all() and (table["mean"] < table["hdi_high"]).all()
    assert (table["r_hat"] < 1.02).all() and (table["ess_bulk"] > 500).all()


def test_nuts_on_one_latent_matches_the_exact_posterior(pca):
    model, x = pca
    draws = latent_nuts_reference(model, x[:1], num_samples=300, warmup=200, num_chains=2)
    z = draws["z"]
    assert z.shape == (2, 300, 2)
    mean, cov = model.exact_posterior(x[:1])
    sd = cov.diagonal().sqrt().detach().numpy()
    np.testing.assert_allclose(z.reshape(-1, 2).mean(0), mean[0].detach().numpy(),
                               atol=float(4 * sd.max() / np.sqrt(200)))
    np.testing.assert_allclose(z.reshape(-1, 2).std(0), sd, rtol=0.15)
    summ = azc.summary(azc.from_dict({"posterior": draws}))
    assert (summ["r_hat"] < 1.05).all()


def test_bayesian_gmm_nuts_is_ordered_converged_and_near_the_truth():
    x = load_dataset("gmm-2d").train_x[:150]
    model = GMM(GMMConfig(3, "diag", priors=True), (2,))
    model.init_from_data(x)
    ref = gmm_nuts_reference(model, x, num_samples=100, warmup=100, num_chains=2)
    assert ref["means"].shape == (2, 100, 3, 2)
    assert (np.diff(ref["means"][..., 0], axis=-1) > 0).all()
    summ = azc.summary(azc.from_dict({"posterior": ref}))
    assert (summ["r_hat"] < 1.05).all() and (summ["ess_bulk"] > 60).all()
    truth = np.array([[-4.0, 0.0], [0.0, 3.0], [3.5, -1.5]])
    post_mean = ref["means"].mean((0, 1))
    post_sd = ref["means"].std((0, 1))
    assert (np.abs(post_mean - truth) < 4 * post_sd + 0.1).all()
    table = compare_posteriors(ref, gmm_guide_draws(model, 200))
    assert len(table) == 3 + 6 + 6


def test_cli_diagnose_writes_netcdf_khat_and_plots(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16",
                 "--epochs", "1", "--eval-samples", "50", "--no-progress", "--out",
                 str(run)]) == 0
    assert main(["diagnose", str(run), "--points", "8", "--draws", "200", "--nuts-samples",
                 "50", "--nuts-warmup", "50", "--device", "cpu"]) == 0
    for name in ("posterior.nc", "khat.png", "posterior.png", "trace.png", "pair.png",
                 "nuts_vs_guide.png"):
        assert (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["khat"]) == 8 and "test_elbo" in metrics
    assert metrics["khat_good"] + metrics["khat_ok"] + metrics["khat_bad"] == 8
    data = azc.from_netcdf(run / "posterior.nc")
    assert idata_values(data, "z").shape == (1, 200, 8, 2)
    capsys.readouterr()
    assert main(["diagnose", str(run), "--points", "8", "--nuts-point", "8"]) == 2
    assert "--nuts-point must be in 0..7" in capsys.readouterr().err
    (run / "checkpoint.pt").unlink()
    capsys.readouterr()
    assert main(["diagnose", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0]


def test_cli_diagnose_on_a_gmm_run_with_an_exact_guide(tmp_path, capsys):
    run = tmp_path / "gmm"
    assert main(["train", "gmm", "--dataset", "gmm-2d", "--epochs", "3", "--batch-size", "1500",
                 "--eval-samples", "50", "--no-progress", "--out", str(run)]) == 0
    assert main(["diagnose", str(run), "--points", "10", "--draws", "100"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())  # strict JSON: no -Infinity
    assert metrics["khat"] == [None] * 10 and metrics["khat_good"] == 10
    assert "nuts_rhat_max" not in metrics  # a discrete latent: no NUTS reference
    assert idata_values(azc.from_netcdf(run / "posterior.nc"), "assignment").shape == (1, 100, 10)
