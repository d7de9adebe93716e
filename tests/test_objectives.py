import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.models import build_model
from pyro_vae.objectives import IWAE_ELBO, make_objective


@pytest.fixture
def ppca():
    data = load_dataset("linear-gaussian")
    model = build_model("linear", data.shape)
    with torch.no_grad():  # a guide that is not the posterior: the bounds have gaps
        model.A.normal_(0, 0.1)
    return model, data.test_x


@pytest.mark.parametrize("k", [1, 5, 50])
def test_iwae_is_exact_when_the_guide_is_the_posterior(ppca, k):
    model, x = ppca
    model.set_guide_to_posterior()
    exact = model.log_marginal(x).sum().item()
    assert -make_objective("iwae", k).loss(model.model, model.guide, x) == pytest.approx(
        exact, rel=1e-5)


def test_iwae_minibatch_scaling_is_outside_the_logsumexp(ppca):
    model, x = ppca
    model.set_guide_to_posterior()  # then each L_K(x_n) = log p(x_n): no Monte Carlo noise
    batch = x[:50]
    estimate = -IWAE_ELBO(num_particles=5).loss(model.model, model.guide, batch, num_data=500)
    expected = 500 / 50 * model.log_marginal(batch).sum().item()
    assert estimate == pytest.approx(expected, rel=1e-5)


def test_bounds_increase_with_k_toward_log_px(ppca):
    model, x = ppca
    exact = model.log_marginal(x).sum().item()
    bounds = [-make_objective("iwae", k).loss(model.model, model.guide, x) for k in (1, 5, 50)]
    assert bounds[0] < bounds[1] < bounds[2] < exact


def test_iwae_with_one_particle_is_the_elbo_with_the_same_draws(ppca):
    model, x = ppca
    pyro.set_rng_seed(3)
    iwae = IWAE_ELBO(num_particles=1, max_plate_nesting=1).differentiable_loss(
        model.model, model.guide, x[:20], num_data=500)
    iwae.backward()
    g_iwae = model.A.grad.clone()
    model.zero_grad()
    pyro.set_rng_seed(3)
    elbo = Trace_ELBO().differentiable_loss(model.model, model.guide, x[:20], num_data=500)
    elbo.backward()
    assert iwae.item() == pytest.approx(elbo.item(), rel=1e-6)
    assert torch.allclose(g_iwae, model.A.grad, rtol=1e-5, atol=1e-5)


def test_iwae_trains_the_guide_of_a_vae():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=2, hidden=(16,))
    x = data.test_x[:32]
    loss = make_objective("iwae", 5).differentiable_loss(model.model, model.guide, x)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_iwae_refuses_discrete_latents():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.tensor(0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(p))

    with pytest.raises(ConfigError, match="reparameterizable"):
        IWAE_ELBO(num_particles=3, max_plate_nesting=2).loss(model, guide, torch.zeros(4))


@pytest.mark.parametrize("name,kwargs,match", [
    ("nope", {}, "unknown objective 'nope'"),
    ("trace", {"num_particles": 0}, "num_particles must be at least 1"),
    ("iwae", {"jit": True}, "no jit variant"),
])
def test_make_objective_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_objective(name, **kwargs)


@pytest.mark.parametrize("name", ["trace", "meanfield"])
def test_jit_variant_matches_plain(name):
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=2, hidden=(16,))
    x = data.test_x[:16]
    losses = []
    for jit in (False, True):
        pyro.set_rng_seed(1)
        losses.append(make_objective(name, 1, jit=jit).loss(model.model, model.guide, x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_minibatch_iwae_is_unbiased_where_renyi_elbo_is_not(ppca):
    """benchmarks/iwae_minibatch.py at test size: the reason IWAE_ELBO exists."""
    from pyro.infer import RenyiELBO

    model, x = ppca
    n, b = x.shape[0], 50
    ours = IWAE_ELBO(5, max_plate_nesting=1)
    renyi = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=2)
    full, mine, theirs = [], [], []
    for _ in range(10):
        full.append(-ours.loss(model.model, model.guide, x) / n)
        batches = [x[i:i + b] for i in range(0, n, b)]
        mine.append(sum(-ours.loss(model.model, model.guide, xb, num_data=n)
                        for xb in batches) / len(batches) / n)
        theirs.append(sum(-renyi.loss(model.model, model.guide, xb, num_data=n)
                          for xb in batches) / len(batches) / n)
    full, mine, theirs = map(torch.tensor, (full, mine, theirs))

    def se(t):
        return t.std().item() / math.sqrt(len(t))

    assert abs(mine.mean() - full.mean()) < 4 * math.hypot(se(mine), se(full))
    assert theirs.mean() - full.mean() > 10 * math.hypot(se(theirs), se(full))
