"""Convolutional encoder/decoder blocks (--arch conv) and the models that use them."""

import pytest
import torch

from pyro_vae import TrainConfig, build_model, evaluate, load_dataset, train
from pyro_vae.errors import ConfigError
from pyro_vae.nn import ConvDecoderNet, ConvEncoderNet, GaussianHead
from pyro_vae.testing import check_model_guide


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (1, 7, 9), (3, 32, 32)])
def test_conv_blocks_keep_shapes_and_leading_dims(shape):
    enc = ConvEncoderNet(shape, (16,), 5, extra_dim=3)
    dec = ConvDecoderNet(4, (16,), shape)
    x = torch.rand(2, 6, *shape)  # (particles, points, C, H, W)
    assert enc(x, torch.zeros(6, 3)).shape == (2, 6, 5)
    assert dec(torch.randn(2, 6, 4)).shape == (2, 6, *shape)
    loc, scale = GaussianHead("conv", shape, (16,), 4)(x[0])
    assert loc.shape == scale.shape == (6, 4) and (scale > 0).all()


def test_conv_refuses_vectors():
    with pytest.raises(ConfigError, match="--arch conv takes images"):
        build_model("vae", (10,), arch="conv")


def test_vae_default_arch_keeps_its_parameters():
    """arch defaults to mlp: the same module names (and so checkpoints) as before."""
    model = build_model("vae", (1, 8, 8), latent_dim=2)
    assert model.config.arch == "mlp"
    assert "encoder.net.0.weight" in model.state_dict()
    assert "decoder.net.0.weight" in model.state_dict()


def test_conv_vae_passes_the_checks_and_trains():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=4, hidden=(32,), arch="conv")
    assert check_model_guide(model, data.test_x[:8]) == []
    before = evaluate(model, data.test_x, num_samples=50)["test_elbo"]
    train(model, data, TrainConfig(epochs=1, batch_size=64, lr=3e-3), progress=False)
    assert evaluate(model, data.test_x, num_samples=50)["test_elbo"] > before + 5


MODELS = [("vae", {"arch": "conv", "latent_dim": 3}),
          ("hvae", {"latent_dims": (4, 2), "hidden": (16, 8)}),
          ("hvae", {"latent_dims": (4, 2), "hidden": (16, 8), "parameterization": "residual",
                    "arch": "conv"}),
          ("cvae", {"latent_dim": 3, "hidden": (16,), "arch": "conv"}),
          ("cvae", {"latent_dim": 3, "hidden": (16,), "task": "quadrants"})]


@pytest.mark.cuda
@pytest.mark.parametrize("name, settings", MODELS,
                         ids=[f"{n}-{'-'.join(map(str, s.values()))}" for n, s in MODELS])
def test_models_check_and_train_on_cuda(name, settings):
    data = load_dataset("digits", device="cuda")
    model = build_model(name, data.shape, **settings).to("cuda")
    y = data.test_y[:8]
    assert check_model_guide(model, data.test_x[:8], y) == []
    for objective, k in (("trace", 1), ("iwae", 3)):
        result = train(model, data, TrainConfig(epochs=1, device="cuda", objective=objective,
                                                num_particles=k), progress=False)
        assert result.history[-1]["test_elbo"] < 0
    m = evaluate(model, data.test_x, data.test_y if model.is_conditional else None,
                 num_samples=50)
    assert m["test_elbo"] <= m["test_log_likelihood"] + 1e-4
    assert model.sample(4).device.type == "cuda"
