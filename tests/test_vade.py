"""VaDE (a VAE with a Gaussian-mixture prior) and the clustering scores of pyro_vae.clustering."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from pyro_vae import TrainConfig, train
from pyro_vae.clustering import can_cluster, cluster_accuracy, cluster_scores, nmi
from pyro_vae.data import tensor_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.metrics import EVALUATIONS, METRICS
from pyro_vae.models import MODELS, build_model
from pyro_vae.models.vade import VaDE, VaDEConfig
from pyro_vae.testing import check_model_guide


def _small(**kw) -> VaDE:
    settings = dict(num_components=3, latent_dim=2, hidden=(8,), pretrain_epochs=1) | kw
    return VaDE(VaDEConfig(**settings), (1, 4, 4))


def test_registered_and_passes_check_model_guide():
    assert MODELS["vade"] is VaDE
    model = build_model("vade", (1, 4, 4), num_components=3, latent_dim=2, hidden=(8,))
    assert check_model_guide(model, torch.bernoulli(torch.rand(6, 1, 4, 4))) == []
    gaussian = _small(likelihood="gaussian")
    assert check_model_guide(gaussian, torch.randn(5, 1, 4, 4)) == []


def test_closed_form_prior_is_the_log_sum_exp_over_components():
    model = _small(num_components=4, latent_dim=3)
    with torch.no_grad():
        model.mix_logits.normal_()
        model.mix_raw_scales.normal_()
    z = torch.randn(2, 7, 3) * 2  # a particle dimension in front of the data
    log_pi, locs, scales = model.mixture()
    brute = torch.stack([
        log_pi[k] + sum(-0.5 * ((z[..., d] - locs[k, d]) / scales[k, d]) ** 2
                        - scales[k, d].log() - 0.5 * math.log(2 * math.pi) for d in range(3))
        for k in range(4)]).logsumexp(0)
    torch.testing.assert_close(model.prior().log_prob(z), brute)
    assert torch.allclose(log_pi.exp().sum(), torch.tensor(1.0))
    # the cluster posterior is Bayes' rule on the same terms
    probs = model.cluster_probabilities(torch.bernoulli(torch.rand(5, 1, 4, 4)))
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))


def test_config_errors():
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        VaDEConfig(pretrain_epochs=-1)
    with pytest.raises(ConfigError, match="num_components"):
        VaDEConfig(num_components=0)
    with pytest.raises(ConfigError, match="pretrain"):
        VaDEConfig(pretrain="kmeans")


# -- the scores ----------------------------------------------------------------------------------
def test_hungarian_accuracy_of_a_relabelling_is_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    perm = rng.permutation(10)
    assert cluster_accuracy(y, perm[y]) == 1.0
    assert nmi(y, perm[y]) == pytest.approx(1.0)


def test_hungarian_accuracy_known_cases():
    y = [0, 0, 0, 1, 1, 1]
    # cluster 5 holds {0,0,1}, cluster 7 holds {0,1,1}: best map 5->0, 7->1, 4 of 6 right
    assert cluster_accuracy(y, [5, 5, 7, 5, 7, 7]) == pytest.approx(4 / 6)
    # one cluster: only one class can be matched
    assert cluster_accuracy(y, [3] * 6) == pytest.approx(0.5)
    # more clusters than classes: the unmatched cluster's points count as wrong
    assert cluster_accuracy(y, [0, 0, 2, 1, 1, 1]) == pytest.approx(5 / 6)
    # cluster 0 holds classes {0,0,0,1,1}, cluster 1 {0,0}: greedy matching takes 0->0 (3 of 7),
    # the optimal matching 0->1, 1->0 gets 2 + 2 = 4 of 7
    y2 = [0, 0, 0, 1, 1, 0, 0]
    c2 = [0, 0, 0, 0, 0, 1, 1]
    assert cluster_accuracy(y2, c2) == pytest.approx(4 / 7)
    assert cluster_accuracy(torch.tensor(y2), torch.tensor(c2)) == pytest.approx(4 / 7)
    with pytest.raises(ValueError):
        cluster_accuracy([0, 1], [0])


def test_nmi_sanity():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 5000)
    independent = rng.integers(0, 5, 5000)
    assert nmi(y, independent) < 0.01
    assert nmi(y, independent) == pytest.approx(normalized_mutual_info_score(y, independent))
    coarse = y // 2  # merging classes keeps part of the information
    assert 0.3 < nmi(y, coarse) < 1.0


def test_clusters_evaluation_is_declared_on_the_capability():
    evaluation = EVALUATIONS["clusters"]
    assert set(evaluation.keys) <= set(METRICS)
    assert can_cluster(_small())
    assert not can_cluster(build_model("vae", (1, 4, 4), latent_dim=2, hidden=(8,)))


# -- recovery of well-separated clusters --------------------------------------------------------
def test_short_training_recovers_well_separated_clusters():
    gen = torch.Generator().manual_seed(3)
    centers = torch.tensor([[0.0, 6.0], [5.2, -3.0], [-5.2, -3.0]])
    labels = torch.randint(0, 3, (900,), generator=gen)
    latent = centers[labels] + torch.randn(900, 2, generator=gen)
    mixing = torch.randn(2, 12, generator=gen)
    x = torch.tanh(latent @ mixing / 4) + 0.05 * torch.randn(900, 12, generator=gen)
    data = tensor_dataset(x[:600], x[600:])
    model = VaDE(VaDEConfig(num_components=3, latent_dim=2, hidden=(32,), likelihood="gaussian",
                            pretrain_epochs=20), (12,))
    train(model, data, TrainConfig(epochs=20, batch_size=100, lr=3e-3, seed=0), progress=False)
    scores = cluster_scores(model, data.test_x, labels[600:])
    assert scores["accuracy"] > 0.95
    assert scores["nmi"] > 0.8
    weights = model.mixture()[0].exp()
    assert weights.min() > 0.2  # no component died


def test_nuts_can_map_the_mixture_prior_and_diagnose_runs(tmp_path, capsys):
    """torch has no transform for MixtureSameFamilyConstraint: with the plain mixture as the
    prior, pyro-vae diagnose (NUTS on one point) ended in a NotImplementedError traceback."""
    from pyro_vae.cli import main

    model = build_model("vade", (1, 8, 8), latent_dim=2, hidden=(8,), num_components=3)
    prior = model.prior()
    z = torch.distributions.transform_to(prior.support)(torch.randn(5, 2))
    assert torch.isfinite(prior.log_prob(z)).all()
    run = tmp_path / "run"
    assert main(["train", "vade", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--num-components", "3", "--pretrain-epochs", "1",
                 "--eval-samples", "0", "--no-progress", "--out", str(run)]) == 0
    code = main(["diagnose", str(run), "--nuts-samples", "20", "--nuts-warmup", "20",
                 "--chains", "1", "--points", "20", "--draws", "100"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (run / "posterior.nc").exists()
