"""The autoencoder and the denoising autoencoder as model/guide pairs."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.nn import functional as F

from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.evaluate import latent_usage
from pyro_vae.models import build_model
from pyro_vae.train import TrainConfig, train


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_elbo_of_the_pair_is_minus_the_reconstruction_loss(likelihood):
    data = load_dataset("digits")
    model = build_model("ae", data.shape, latent_dim=3, hidden=(16,), likelihood=likelihood)
    x = data.test_x[:25]
    loss = Trace_ELBO().loss(model.model, model.guide, x, None)
    out = model.decoder(model.encoder(x.flatten(1)))
    if likelihood == "bernoulli":
        expected = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    else:  # MSE plus the Gaussian's constant, sigma^2 = 1/2
        expected = F.mse_loss(out, x, reduction="sum") + 0.5 * x.numel() * math.log(math.pi)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("corruption", ["gaussian", "dropout"])
def test_the_dae_corrupts_in_training_only(corruption):
    data = load_dataset("digits")
    model = build_model("dae", data.shape, latent_dim=3, hidden=(16,), corruption=corruption,
                        corruption_level=0.5)
    x = data.test_x[:25]
    clean = model.encode(x)[0]
    model.train()
    noisy = poutine.trace(model.guide).get_trace(x, None).nodes["z"]["value"]
    assert not torch.allclose(noisy, clean)
    model.eval()
    assert torch.allclose(poutine.trace(model.guide).get_trace(x, None).nodes["z"]["value"],
                          clean)


def test_bad_settings_and_data_are_one_line_errors():
    with pytest.raises(ConfigError, match="corruption_level"):
        build_model("dae", (1, 8, 8), corruption="dropout", corruption_level=1.0)
    with pytest.raises(ConfigError, match="unknown corruption"):
        build_model("dae", (1, 8, 8), corruption="salt")
    model = build_model("ae", (10,))
    with pytest.raises(DataError, match="--likelihood gaussian"):
        model.check_data(torch.full((3, 10), 2.0))


@pytest.mark.parametrize("name", ["ae", "dae"])
def test_training_lowers_the_reconstruction_loss(name):
    data = load_dataset("digits")
    model = build_model(name, data.shape, latent_dim=8, hidden=(64,))
    result = train(model, data, TrainConfig(epochs=6, batch_size=64), progress=False)
    assert result.history[-1]["test_elbo"] > result.history[0]["test_elbo"] + 3
    # the codes are spread out, as nothing ties them to a prior
    assert latent_usage(model, data.test_x).active_units == 8


def test_warm_up_and_free_bits_leave_the_autoencoder_alone():
    data = load_dataset("digits")
    results = []
    for extra in ({}, dict(beta=4.0, kl_warmup_epochs=2)):
        pyro.set_rng_seed(0)
        model = build_model("ae", data.shape, latent_dim=4, hidden=(32,))
        train(model, data, TrainConfig(epochs=2, batch_size=128, **extra), progress=False)
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
