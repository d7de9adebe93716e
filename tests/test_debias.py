"""Resampling by latent density (DB-VAE) draws a rare group more often than uniform sampling,
and the resampled data set feeds the ordinary minibatch path."""

import math

import pytest
import torch

from pyro_vae.data import linear_gaussian_parameters, tensor_dataset
from pyro_vae.debias import (
    LatentDensitySampler,
    aggregate_weights,
    effective_sample_size,
    histogram_weights,
    latent_density_weights,
    resampled,
)
from pyro_vae.errors import UserError
from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig

N, RARE = 1000, 20  # 2% of the points come from a far corner of the latent space


def _rare_group_case():
    """Probabilistic-PCA data whose latent z is N(0, I) for 980 points and N((3, 3), 0.3^2 I)
    for 20, and the generating model with its guide at the exact posterior."""
    p = linear_gaussian_parameters()
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(N, 2, generator=gen)
    z[:RARE] = 3.0 + 0.3 * z[:RARE]
    x = z @ p["W"].T + p["b"] + p["sigma"] * torch.randn(N, p["W"].shape[0], generator=gen)
    model = LinearGaussian(LinearGaussianConfig(latent_dim=2), (x.shape[1],))
    with torch.no_grad():
        model.W.copy_(p["W"])
        model.b.copy_(p["b"])
        model.raw_sigma.copy_(torch.log(torch.expm1(torch.as_tensor(p["sigma"]) - 1e-4)))
        model.set_guide_to_posterior()
    rare = torch.zeros(N, dtype=torch.bool)
    rare[:RARE] = True
    return model.eval(), x, rare


@pytest.mark.parametrize("method, combine, factor", [
    ("histogram", "product", 3.0), ("histogram", "max", 3.0),
    # the aggregate posterior counts the rare group's own tight cluster: a smaller gain
    ("aggregate", "product", 1.5)])
def test_resampling_raises_the_share_of_the_rare_group(method, combine, factor):
    model, x, rare = _rare_group_case()
    w = latent_density_weights(model, x, method=method, combine=combine)
    assert w.shape == (N,) and w.sum().item() == pytest.approx(1.0)
    draws = 20 * N
    idx = LatentDensitySampler(w, draws, torch.Generator().manual_seed(0)).permutation()
    share = rare[idx].double().mean().item()
    uniform = RARE / N
    sd = math.sqrt(uniform * (1 - uniform) / draws)  # of the share under uniform sampling
    # the margin: at least `factor` times the uniform share, and 20 of its standard deviations
    assert share > max(factor * uniform, uniform + 20 * sd), share
    # the weights the sampler drew by: the rare group's total weight, as the share shows
    assert share == pytest.approx(w[rare].sum().item(), abs=5 * math.sqrt(share / draws))


def test_histogram_weights_are_inverse_bin_frequencies():
    codes = torch.tensor([[0.0], [0.1], [0.2], [1.0]])  # two bins: 3 points, then 1
    w = histogram_weights(codes, bins=2, alpha=0.01)
    expected = torch.tensor([1 / 0.76] * 3 + [1 / 0.26], dtype=torch.double)
    assert torch.allclose(w, expected / expected.sum())
    assert effective_sample_size(torch.ones(7)) == pytest.approx(7)
    # a large alpha is nearly uniform
    assert effective_sample_size(histogram_weights(codes, bins=2, alpha=1e6)) == \
        pytest.approx(4, rel=1e-5)


def test_aggregate_weights_prefer_the_isolated_point():
    loc = torch.tensor([[0.0], [0.01], [-0.01], [5.0]])
    w = aggregate_weights(loc, torch.full_like(loc, 0.1), alpha=1e-3)
    # q at the three close points is about 3/4 of one component's peak, at the isolated one
    # 1/4 of it (its own component): a weight three times as large
    assert w[3] / w[0] == pytest.approx(3.0, rel=0.01)


def test_resampled_dataset_feeds_minibatches_by_weight():
    x = torch.arange(10.0).unsqueeze(1)
    data = tensor_dataset(x)
    w = torch.zeros(10)
    w[7] = 1.0  # every draw is point 7
    fed = resampled(data, w)
    batches = list(fed.batches(5))
    assert len(batches) == 2 and all(torch.all(b == 7.0) for b, _ in batches)
    torch.manual_seed(0)
    one = fed.permutation()
    torch.manual_seed(0)
    assert torch.equal(one, resampled(data, w).permutation())  # seeded like Dataset's


@pytest.mark.parametrize("call", [
    lambda: LatentDensitySampler(torch.tensor([1.0, -1.0])),
    lambda: LatentDensitySampler(torch.zeros(3)),
    lambda: histogram_weights(torch.zeros(4), bins=2),
    lambda: histogram_weights(torch.zeros(4, 1), alpha=0.0),
    lambda: resampled(tensor_dataset(torch.zeros(4, 1)), torch.ones(3)),
])
def test_bad_input_is_a_user_error(call):
    with pytest.raises(UserError):
        call()


def test_the_training_loop_draws_its_minibatches_by_weight(monkeypatch):
    """train() takes a resampled data set as it is: every minibatch it steps on holds only the
    points of positive weight."""
    from pyro_vae.train import TrainConfig, train

    _, x, rare = _rare_group_case()
    model = LinearGaussian(LinearGaussianConfig(latent_dim=2), (x.shape[1],))
    w = rare.double()  # only the rare group is ever drawn
    data = resampled(tensor_dataset(x), w)
    seen = []
    batches = data.batches

    def spy(*args, **kwargs):
        for xb, yb in batches(*args, **kwargs):
            seen.append(xb)
            yield xb, yb

    monkeypatch.setattr(data, "batches", spy)
    train(model, data, TrainConfig(epochs=1, batch_size=100), progress=False, hooks=[])
    assert len(seen) == N // 100
    drawn = torch.cat(seen)
    assert all((x[rare] == row).all(1).any() for row in drawn)
