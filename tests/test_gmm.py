"""The Gaussian mixture: exact marginal, enumeration, a peer check against scikit-learn's EM."""

import json

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from sklearn.mixture import GaussianMixture

from pyro_vae import TrainConfig, build_model, load_dataset, train
from pyro_vae.cli import main
from pyro_vae.data import gmm_2d_parameters, tensor_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.models.gmm import GMM, GMMConfig


@pytest.mark.parametrize("covariance,weights", [("full", "learned"), ("diag", "uniform")])
def test_log_marginal_is_the_sum_over_components(covariance, weights):
    model = GMM(GMMConfig(4, covariance, weights), (3,))
    with torch.no_grad():
        model.raw_diag.normal_()
        if covariance == "full":
            model.raw_offdiag.normal_()
        if model.logits is not None:
            model.logits.normal_()
    x = torch.randn(7, 3) * 2
    p = model.parameters_dict()
    brute = torch.stack([p["weights"][k].log() + torch.distributions.MultivariateNormal(
        p["means"][k], p["covariances"][k]).log_prob(x) for k in range(4)]).logsumexp(0)
    torch.testing.assert_close(model.log_marginal(x), brute)
    if weights == "uniform":
        torch.testing.assert_close(p["weights"], torch.full((4,), 0.25))


def test_enumerated_elbo_equals_the_exact_log_likelihood():
    model = GMM(GMMConfig(3), (2,))
    x = torch.randn(50, 2) * 3
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x)
    assert loss == pytest.approx(-model.log_marginal(x).sum().item(), rel=1e-5)


def test_ml_fit_matches_sklearn_em_and_recovers_the_means():
    data = load_dataset("gmm-2d")
    model = build_model("gmm", data.shape)
    config = TrainConfig(epochs=300, batch_size=data.num_train, lr=0.05, objective="enum")
    result = train(model, data, config, progress=False)
    x = data.train_x
    ours = model.log_marginal(x).mean().item()
    assert result.train_elbo == pytest.approx(ours, abs=1e-3)  # the ELBO is exact here
    em = GaussianMixture(3, covariance_type="full", tol=1e-8, max_iter=1000,
                         random_state=0).fit(x.numpy())
    assert ours == pytest.approx(em.score(x.numpy()), abs=0.01)
    truth = gmm_2d_parameters()
    means = model.parameters_dict()["means"].detach()
    order = means[:, 0].argsort()
    true_order = truth["means"][:, 0].argsort()
    torch.testing.assert_close(means[order], truth["means"][true_order], atol=0.15, rtol=0)
    torch.testing.assert_close(model.parameters_dict()["weights"].detach()[order],
                               truth["weights"][true_order], atol=0.03, rtol=0)
    # infer_discrete's MAP components against the generating labels (relabelled by order)
    relabel = torch.empty(3, dtype=torch.long)
    relabel[order] = true_order
    accuracy = (relabel[model.assignments(x)] == data.train_y).float().mean()
    assert accuracy > 0.97


def test_bayesian_gmm_trains_on_the_enumerated_elbo():
    data = tensor_dataset(load_dataset("gmm-2d").train_x[:300])
    model = GMM(GMMConfig(3, "diag", priors=True), data.shape)
    model.init_from_data(data.train_x)
    assert set(model.latent_sites) == {"weights", "loc_first", "loc_gaps", "loc_rest", "scale",
                                       "assignment"}
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 0.02}),
                         TraceEnum_ELBO(max_plate_nesting=1))
    losses = [svi.step(data.train_x) for _ in range(300)]
    assert sum(losses[-20:]) < sum(losses[:20])
    means = model.parameters_dict()["means"]
    assert (means[:, 0].diff() > 0).all()  # the ordering constraint holds by construction
    truth = gmm_2d_parameters()["means"]
    torch.testing.assert_close(means, truth[truth[:, 0].argsort()], atol=0.4, rtol=0)


def test_bad_settings_and_data_are_one_line_errors():
    with pytest.raises(ConfigError, match="diagonal"):
        GMMConfig(priors=True, covariance="full")
    with pytest.raises(ConfigError, match="covariance"):
        GMMConfig(covariance="spherical")
    with pytest.raises(DataError, match="vectors"):
        GMM(GMMConfig(), (1, 8, 8))
    with pytest.raises(DataError):
        tensor_dataset(torch.zeros(5))


def test_cli_trains_gmm_with_the_enum_objective_by_default(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "gmm", "--dataset", "gmm-2d", "--epochs", "3", "--batch-size",
                 "1500", "--eval-samples", "50", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["objective"] == "enum"
    assert main(["train", "gmm", "--dataset", "digits", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "vectors" in capsys.readouterr().err


@pytest.mark.cuda
def test_gmm_trains_and_estimates_on_cuda():
    from pyro_vae.likelihood import estimate_log_likelihood

    data = load_dataset("gmm-2d", device="cuda")
    model = build_model("gmm", data.shape).to("cuda")
    train(model, data, TrainConfig(epochs=50, batch_size=1500, lr=0.05, objective="enum",
                                   device="cuda"), progress=False)
    res = estimate_log_likelihood(model, data.test_x[:20], ks=(1, 10), replicates=2)
    assert res["exact"] == pytest.approx(model.log_marginal(data.test_x[:20]).mean().item())
    assert model.assignments(data.test_x).device.type == "cuda"


@pytest.mark.parametrize("raw_diag,offdiag", [(-20.0, 100.0), (5.0, 1e5)])
def test_sampling_uses_the_cholesky_factor_itself(raw_diag, offdiag):
    """After a large --lr the scales can be so uneven that factorizing tril @ tril.T again
    fails in float32 (it did, in `pyro-vae sample`); the factor is valid all the same."""
    model = build_model("gmm", (2,))
    with torch.no_grad():
        model.raw_diag.fill_(raw_diag)
        model.raw_offdiag.fill_(offdiag)
    with pytest.raises(RuntimeError, match="positive-definite"):  # the old way
        torch.linalg.cholesky(model.parameters_dict()["covariances"])
    pyro.set_rng_seed(0)
    draws = model.sample(2000)
    assert draws.shape == (2000, 2) and torch.isfinite(draws).all()
    pyro.set_rng_seed(0)  # each draw is mean_c + L_c eps with the model's own factor L_c
    p = model.parameters_dict()
    c = torch.multinomial(p["weights"], 2000, replacement=True)
    eps = torch.randn(2000, 2, 1)
    expected = p["means"][c] + (model.scale_tril()[c] @ eps).squeeze(-1)
    assert torch.equal(draws, expected)


def test_kmeans_needs_as_many_distinct_points_as_components():
    model = build_model("gmm", (2,))  # 3 components
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 2.0]])
    with pytest.raises(DataError, match="3 components needs at least 3 distinct training "
                                        "points to start from, got 2"):
        model.init_from_data(x)
    model.init_from_data(torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]))
