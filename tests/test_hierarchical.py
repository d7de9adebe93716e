"""hvae: both guides pass the contract checks, train with every objective, report per layer."""

import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import TrainConfig, build_model, evaluate, load_dataset, train
from pyro_vae.errors import ConfigError
from pyro_vae.evaluate import active_units_per_site, latent_usage
from pyro_vae.runtime import set_seed
from pyro_vae.testing import check_model_guide

SMALL = dict(latent_dims=(6, 3), hidden=(32, 16))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("parameterization", ["iwae", "residual"])
def test_hvae_passes_the_checks(digits, parameterization, arch):
    model = build_model("hvae", digits.shape, parameterization=parameterization, arch=arch,
                        **SMALL)
    assert check_model_guide(model, digits.test_x[:8]) == []
    assert model.latent_sites == ("z1", "z2")


def test_three_layers_have_three_sites(digits):
    model = build_model("hvae", digits.shape, latent_dims=(8, 4, 2), hidden=(32, 16, 8),
                        parameterization="residual")
    assert check_model_guide(model, digits.test_x[:8]) == []
    assert model.latent_sites == ("z1", "z2", "z3")
    loc, scale = model.encode(digits.test_x[:5])
    assert loc.shape == scale.shape == (5, 14)
    assert model.sample(3).shape == (3, 1, 8, 8)


@pytest.mark.parametrize("settings, fragment", [
    ({"latent_dims": (10,), "hidden": (10,)}, "at least 2 stochastic layers"),
    ({"latent_dims": (10, 5), "hidden": (10,)}, "one width per stochastic layer"),
    ({"parameterization": "ladder"}, "unknown parameterization"),
    ({"arch": "resnet"}, "unknown arch"),
])
def test_bad_settings_are_config_errors(digits, settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_model("hvae", digits.shape, **settings)


def test_residual_meanfield_is_unbiased_for_the_monte_carlo_elbo(digits):
    """The residual guide samples in the model's order, so TraceMeanField_ELBO's analytic
    per-layer KL has the expectation of Trace_ELBO's sampled one (4 standard errors)."""
    model = build_model("hvae", digits.shape, parameterization="residual", **SMALL)
    x = digits.test_x[:4]
    n = 4000
    mc = Trace_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1)
    mf = TraceMeanField_ELBO(num_particles=n, vectorize_particles=True, max_plate_nesting=1)
    draws = torch.tensor([Trace_ELBO().loss(model.model, model.guide, x) for _ in range(200)])
    stderr = draws.std().item() / n**0.5
    a = mc.loss(model.model, model.guide, x)
    b = mf.loss(model.model, model.guide, x)
    assert abs(a - b) < 4 * 2**0.5 * stderr + 1e-3


def test_per_site_active_units_match_latent_usage_for_one_site(digits):
    model = build_model("vae", digits.shape, latent_dim=6)
    train(model, digits, TrainConfig(epochs=3), progress=False)
    x = digits.test_x
    assert active_units_per_site(model, x) == {"z": latent_usage(model, x).active_units}


def test_overall_active_units_count_each_layer_as_the_per_layer_count_does():
    """z2's mean under a bottom-up guide depends on the draw of z1: one draw per image would
    add that noise to Cov_x(E_q[z2]) and count inactive units as active (it counted 2 here)."""
    data = load_dataset("mnist-5k")
    model = build_model("hvae", data.shape, latent_dims=(20, 10), hidden=(100, 50), init="torch")
    train(model, data, TrainConfig(epochs=2), progress=False)
    x = data.test_x
    set_seed(1)
    per_site = active_units_per_site(model, x)
    set_seed(1)
    assert latent_usage(model, x).active_units == sum(per_site.values()) == 1


@pytest.mark.parametrize("objective, k", [("trace", 1), ("meanfield", 1), ("iwae", 5)])
def test_hvae_trains_and_reports_active_units_per_layer(digits, objective, k):
    model = build_model("hvae", digits.shape, parameterization="residual", **SMALL)
    before = evaluate(model, digits.test_x, num_samples=50)["test_elbo"]
    train(model, digits, TrainConfig(epochs=4, objective=objective, num_particles=k),
          progress=False)
    m = evaluate(model, digits.test_x, num_samples=50)
    assert m["test_elbo"] > before + 5
    assert set(m["active_units_per_site"]) == {"z1", "z2"}
    assert 0 <= m["active_units_per_site"]["z1"] <= 6
    assert 0 <= m["active_units_per_site"]["z2"] <= 3


@pytest.mark.parametrize("name, settings", [("hvae", SMALL), ("vae", {"latent_dim": 4})])
def test_iwae_init_is_glorot_and_starts_the_decoder_at_the_data_mean(digits, name, settings):
    """init="iwae" (the IWAE paper's code): Glorot-uniform weights, zero biases, and after
    init_from_data (which train() calls) the output bias is the logit of the mean pixel."""
    torch.manual_seed(0)
    model = build_model(name, digits.shape, init="iwae", **settings)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            bound = (6 / (m.in_features + m.out_features)) ** 0.5
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.8 * bound
            assert (m.bias == 0).all()
    x = digits.train_x
    torch.manual_seed(0)
    before = evaluate(model, digits.test_x, num_samples=50)["test_elbo"]
    model.init_from_data(x)
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    p = x.mean(0).reshape(-1).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(torch.sigmoid(last.bias), p, atol=1e-5)
    torch.manual_seed(0)
    after = evaluate(model, digits.test_x, num_samples=50)["test_elbo"]
    assert after > before + 5  # the untrained model already knows the mean image


def test_torch_init_leaves_the_decoder_alone(digits):
    model = build_model("vae", digits.shape, latent_dim=4)
    assert model.config.init == "torch"
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    bias = last.bias.detach().clone()
    model.init_from_data(digits.train_x)
    assert torch.equal(last.bias, bias)
