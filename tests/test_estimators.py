"""Gradient estimators against exact gradients computed by enumerating every latent state.

A Bernoulli latent model with 3 latent bits and 4 pixels has 8 states per data point, so the
ELBO, the expected IWAE bound E[L_K] (8^K particle combinations) and the posterior p(z | x)
are exact sums; autograd gives their exact gradients. Each estimator's mean over N draws must
match what it is unbiased for within 4 standard errors, per parameter coordinate.
"""

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_vae.data import load_dataset
from pyro_vae.estimators import RWS_ELBO, VIMCO_ELBO, DReG_IWAE_ELBO
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.exact import (
    exact_elbo,
    exact_gradient,
    exact_iwae,
    exact_wake_phi_target,
    tiny_problem,
)
from pyro_vae.estimators.gradients import (
    difference_z_scores,
    gradient_draws,
    guide_parameters,
    ppca_near_posterior,
    summarize,
    z_scores,
)
from pyro_vae.models import build_model
from pyro_vae.objectives import IWAE_ELBO

K_LATENT, D = 3, 4


@pytest.fixture
def tiny():
    return tiny_problem(K_LATENT, D)


def assert_unbiased(draws, exact, n_se=4.0):
    z = z_scores(summarize("", draws), exact)
    assert (z < n_se).all(), f"max |z| = {z.max():.2f} at coordinate {int(z.argmax())}"


def _params(model):
    return [p for p in model.parameters()]


@pytest.mark.parametrize("name,make", [
    ("score function (Trace_ELBO)", lambda: Trace_ELBO()),
    ("tracegraph, decaying baseline", lambda: TraceGraphBaselineELBO(baseline="decaying")),
    ("tracegraph, neural baseline", lambda: TraceGraphBaselineELBO(baseline="neural")),
], ids=["trace", "tracegraph-decaying", "tracegraph-neural"])
def test_score_function_gradients_are_unbiased_for_the_elbo(tiny, name, make):
    model, x = tiny
    objective = make()
    optim = None
    if getattr(objective, "baselines", None) is not None:  # the net learns as draws go on
        gradient_draws(objective, model, x, [], 1)
        optim = torch.optim.Adam(objective.baselines.parameters(), lr=1e-2)
    draws = gradient_draws(objective, model, x, _params(model), 600, baseline_optim=optim)
    assert_unbiased(draws, exact_gradient(lambda: exact_elbo(model, x), _params(model)))


def test_vimco_is_unbiased_for_the_iwae_bound(tiny):
    model, x = tiny
    objective = VIMCO_ELBO(num_particles=3, max_plate_nesting=2)
    draws = gradient_draws(objective, model, x, _params(model), 1500)
    assert_unbiased(draws, exact_gradient(lambda: exact_iwae(model, x, 3), _params(model)))
    bounds = torch.tensor([-objective.loss(model.model, model.guide, x) for _ in range(400)])
    stderr = bounds.std() / 20
    assert abs(bounds.mean() - exact_iwae(model, x, 3).item()) < 4 * stderr


def test_rws_wake_theta_is_unbiased_and_wake_phi_is_consistent(tiny):
    model, x = tiny
    guide = guide_parameters(model, x)
    theta = [p for p in _params(model) if all(p is not q for q in guide)]
    draws = gradient_draws(RWS_ELBO(num_particles=3, max_plate_nesting=2), model, x, theta,
                           1000)
    assert_unbiased(draws, exact_gradient(lambda: exact_iwae(model, x, 3), theta))
    # wake-phi is self-normalized importance sampling: biased at small K, consistent as K grows
    target = exact_gradient(lambda: exact_wake_phi_target(model, x), guide)
    errors = {}
    for k in (2, 200):
        d = gradient_draws(RWS_ELBO(num_particles=k, max_plate_nesting=2), model, x, guide, 500)
        errors[k] = (summarize("", d).mean - target.double()).norm().item()
    assert errors[200] < 0.2 * errors[2]
    d = gradient_draws(RWS_ELBO(num_particles=200, max_plate_nesting=2), model, x, guide, 500)
    assert_unbiased(d, target, n_se=5.0)


def test_baselines_lower_the_guide_gradient_variance(tiny):
    model, x = tiny
    guide = guide_parameters(model, x)
    variance = {}
    for baseline in ("none", "decaying", "neural"):
        objective = TraceGraphBaselineELBO(baseline=baseline)
        draws = gradient_draws(objective, model, x, guide, 50)  # let the averages settle
        optim = None
        if baseline == "neural":
            optim = torch.optim.Adam(objective.baselines.parameters(), lr=1e-2)
            gradient_draws(objective, model, x, guide, 150, baseline_optim=optim)
        draws = gradient_draws(objective, model, x, guide, 300, baseline_optim=optim)
        variance[baseline] = summarize(baseline, draws).variance.sum().item()
    # on a fixed minibatch the decaying average is already one average per data point, so
    # the neural correction adds little there; both must beat no baseline by far
    assert variance["decaying"] < 0.3 * variance["none"]
    assert variance["neural"] < 0.3 * variance["none"]


def test_vimco_trains_a_bernoulli_guide_that_renyi_alpha0_leaves_unchanged(tiny):
    model, x = tiny
    guide = guide_parameters(model, x)
    start = [p.detach().clone() for p in guide]
    before = exact_elbo(model, x).item()
    results = {}
    for name, objective in [("renyi", RenyiELBO(alpha=0, num_particles=5, max_plate_nesting=2,
                                                vectorize_particles=True)),
                            ("vimco", VIMCO_ELBO(num_particles=5, max_plate_nesting=2))]:
        with torch.no_grad():
            for p, p0 in zip(guide, start, strict=True):
                p.copy_(p0)
        optim = torch.optim.Adam(guide, lr=0.05)  # the guide only; the model stays fixed
        for _ in range(150):
            optim.zero_grad()
            objective.loss_and_grads(model.model, model.guide, x)
            optim.step()
        results[name] = (exact_elbo(model, x).item(),
                         max((p - p0).abs().max().item() for p, p0 in zip(guide, start,
                                                                            strict=True)))
    assert results["renyi"] == (pytest.approx(before, abs=1e-6), 0.0)
    assert results["vimco"][1] > 0.1
    assert results["vimco"][0] > before + 0.2


@pytest.fixture
def tiny_vae():
    model = build_model("vae", (D,), latent_dim=2, hidden=(8,), likelihood="gaussian")
    x = torch.randn(3, D)
    return model, x


def test_dreg_matches_the_iwae_guide_gradient_with_lower_variance():
    """Probabilistic PCA with the guide near the exact posterior: there the plain IWAE guide
    gradient is dominated by its score term, which DReG removes."""
    data = load_dataset("linear-gaussian")
    model = ppca_near_posterior(data.shape)
    x = data.test_x[:5]
    guide = guide_parameters(model, x)
    assert {id(p) for p in guide} == {id(model.A), id(model.c), id(model.raw_tril)}
    plain = gradient_draws(IWAE_ELBO(num_particles=5, max_plate_nesting=2), model, x, guide,
                           600)
    dreg = gradient_draws(DReG_IWAE_ELBO(num_particles=5, max_plate_nesting=2), model, x,
                          guide, 600)
    p, d = summarize("iwae", plain), summarize("dreg", dreg)
    z = difference_z_scores(p, d)
    assert (z < 4).all(), f"max |z| = {z.max():.2f}"
    assert d.variance.sum() < 0.2 * p.variance.sum()


def test_dreg_gives_the_model_the_plain_iwae_gradient_draw_for_draw(tiny_vae):
    model, x = tiny_vae
    guide = guide_parameters(model, x)
    theta = [p for p in model.parameters() if all(p is not q for q in guide)]
    grads, losses = [], []
    for objective in (IWAE_ELBO(num_particles=5, max_plate_nesting=2),
                      DReG_IWAE_ELBO(num_particles=5, max_plate_nesting=2)):
        pyro.set_rng_seed(5)
        grads.append(gradient_draws(objective, model, x, theta, 3))
        pyro.set_rng_seed(5)
        losses.append(objective.loss(model.model, model.guide, x))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_minibatch_scale_is_outside_the_log_sum_exp(tiny):
    model, x = tiny
    for objective in (VIMCO_ELBO(num_particles=4, max_plate_nesting=2),
                      RWS_ELBO(num_particles=4, max_plate_nesting=2)):
        pyro.set_rng_seed(1)
        full = objective.loss(model.model, model.guide, x)
        pyro.set_rng_seed(1)
        scaled = objective.loss(model.model, model.guide, x, num_data=20)
        assert scaled == pytest.approx(10 * full, rel=1e-5)
