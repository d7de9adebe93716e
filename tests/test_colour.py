"""Colour 8-bit images: the discretized logistic, bits per dimension, conv nets for 3 channels,
pictures in colour."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae import data
from pyro_vae.cli import main
from pyro_vae.data import tensor_dataset
from pyro_vae.distributions import DequantizedNormal, DiscretizedLogistic
from pyro_vae.errors import DataError
from pyro_vae.evaluate import bits_per_dim, evaluate
from pyro_vae.latent_plots import save_interpolation
from pyro_vae.metrics import METRICS, check_keys, summary_rows
from pyro_vae.models import MODELS
from pyro_vae.models.likelihoods import LIKELIHOODS
from pyro_vae.plots import save_reconstructions, save_samples
from pyro_vae.testing import check_model_guide
from pyro_vae.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
LN2 = math.log(2)


def _benchmark():
    spec = importlib.util.spec_from_file_location("colour_benchmark",
                                                  ROOT / "benchmarks" / "colour.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark()


def _patterns(num: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(BENCH.colour_patterns(num, size, seed))


# -- the distribution ---------------------------------------------------------------------------
CASES = [(0.5, -2.0), (0.0, -7.0), (1.0, -7.0), (0.3, -12.0), (0.2, -30.0), (-3.0, 0.0),
         (5.0, 3.0), (0.7, 8.0), (0.5, 20.0), (0.123, -5.5)]


@pytest.mark.parametrize("loc, log_scale", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_the_256_probabilities_of_a_pixel_sum_to_one(loc, log_scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64),
                            torch.tensor(log_scale, dtype=torch.float64))
    levels = d.enumerate_support()
    assert levels.shape == (256,) and torch.equal(levels, torch.arange(256.0).double() / 255)
    log_p = d.log_prob(levels)
    assert torch.isfinite(log_p).all()
    assert abs(log_p.exp().sum().item() - 1) < 1e-5
    assert abs(d.mean.item() - (log_p.exp() * levels).sum().item()) < 1e-6


def test_float32_probabilities_sum_to_one_and_gradients_stay_finite():
    loc = torch.tensor([-2.0, 0.0, 0.4, 1.0, 3.0], requires_grad=True)
    log_scale = torch.tensor([-7.0, -7.0, -4.0, 2.0, 5.0], requires_grad=True)
    d = DiscretizedLogistic(loc, log_scale)
    log_p = d.log_prob(d.enumerate_support())  # (256, 5)
    assert torch.allclose(log_p.exp().sum(0), torch.ones(5), atol=1e-5)
    log_p.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()


def test_the_log_probability_is_the_logistic_cdf_difference():
    loc, log_scale = torch.tensor(0.42, dtype=torch.float64), torch.tensor(-3.0).double()
    cdf = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(torch.tensor(0.0).double(), torch.tensor(1.0).double()),
        [torch.distributions.transforms.SigmoidTransform().inv,
         torch.distributions.transforms.AffineTransform(loc, log_scale.exp())]).cdf
    k = torch.arange(256).double()
    expected = cdf((k + 0.5) / 255) - cdf((k - 0.5) / 255)
    expected[0], expected[-1] = cdf(torch.tensor(0.5 / 255).double()), 1 - cdf(
        torch.tensor(254.5 / 255).double())
    d = DiscretizedLogistic(loc, log_scale)
    assert torch.allclose(d.log_prob(k / 255).exp(), expected, atol=1e-12)


@pytest.mark.parametrize("loc, log_scale", [(0.4, -3.0), (0.02, -2.5), (0.97, -4.0)])
def test_sample_frequencies_match_the_probabilities(loc, log_scale):
    """Pearson's chi-square over the levels of probability > 1e-3 (the rest pooled): below
    the 0.999 quantile of its distribution (mean df, sd sqrt(2 df): df + 4.5 sd covers it)."""
    torch.manual_seed(0)
    n = 200_000
    d = DiscretizedLogistic(torch.tensor(loc).double(), torch.tensor(log_scale).double())
    x = d.sample((n,))
    assert x.shape == (n,) and bool(d.support.check(x).all())
    counts = torch.bincount(torch.round(x * 255).long(), minlength=256).double()
    p = d.log_prob(d.enumerate_support()).exp()
    keep = p > 1e-3
    observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
    expected = n * torch.cat([p[keep], p[~keep].sum()[None]])
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    df = int(keep.sum())
    assert chi2 < df + 4.5 * math.sqrt(2 * df), (chi2, df)


def test_the_support_is_the_8_bit_grid():
    d = DiscretizedLogistic(torch.zeros(3), torch.zeros(3))
    assert d.support.check(torch.tensor([0.0, 17 / 255, 1.0])).all()
    assert not d.support.check(torch.tensor([0.5])).any()  # 127.5 / 255
    assert not d.support.check(torch.tensor([-1 / 255, 256 / 255])).any()
    assert d.support.is_discrete
    assert d.expand((2, 3)).log_prob(torch.zeros(2, 3)).shape == (2, 3)


@pytest.mark.parametrize("level, loc, scale", [(100, 0.4, 0.02), (3, 0.0, 0.05),
                                               (128, 0.5, 0.001)])
def test_dequantization_is_unbiased_for_the_bin_mass_and_bounds_its_log(level, loc, scale):
    """mean of exp(log_prob) over 100,000 draws of u = the Gaussian's mass of the bin
    [x - 1/510, x + 1/510] (within 5 Monte Carlo standard errors); mean of log_prob <= its
    log."""
    torch.manual_seed(0)
    d = DequantizedNormal(torch.full((100_000,), loc).double(), torch.tensor(scale).double())
    x = torch.full((100_000,), level / 255).double()
    log_p = d.log_prob(x)
    normal = torch.distributions.Normal(torch.tensor(loc).double(), scale)
    mass = (normal.cdf(torch.tensor((level + 0.5) / 255)) -
            normal.cdf(torch.tensor((level - 0.5) / 255))).item()
    p = log_p.exp()
    assert abs(p.mean().item() - mass) < 5 * p.std().item() / len(p) ** 0.5 + 1e-12
    assert log_p.mean().item() <= math.log(mass)
    samples = d.sample()
    assert bool(d.support.check(samples).all())


# -- models --------------------------------------------------------------------------------------
def _model(name: str, shape, **settings):
    cls = MODELS[name]
    return cls(cls.make_config(likelihood="logistic", **settings), shape)


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 28), (3, 16, 16)],
                         ids=lambda s: "x".join(map(str, s)))
def test_conv_vae_with_the_logistic_passes_the_checks(shape):
    torch.manual_seed(0)
    model = _model("vae", shape, arch="conv", latent_dim=4, hidden=(32,))
    x = torch.randint(0, 256, (4, *shape)) / 255.0
    assert check_model_guide(model, x) == []
    assert model.decoder(torch.zeros(2, 4)).shape == (2, 2 * shape[0], *shape[1:])
    assert model.sample(3).shape == (3, *shape)
    assert model.discrete_likelihood and model.scored_dims == math.prod(shape)


@pytest.mark.parametrize("name, settings", [
    ("hvae", {"latent_dims": (4, 2), "hidden": (16, 8), "arch": "conv"}),
    ("cvae", {"latent_dim": 3, "hidden": (16,), "arch": "conv"}),
    ("cvae", {"latent_dim": 3, "hidden": (16,), "task": "quadrants"}),
], ids=["hvae", "cvae-label", "cvae-quadrants"])
def test_other_image_models_share_the_likelihood(name, settings):
    torch.manual_seed(0)
    model = _model(name, (3, 16, 16), **settings)
    x = _patterns(6)
    y = torch.arange(6) % 10 if model.is_conditional else None
    assert check_model_guide(model, x, y) == []
    assert model.reconstruct(x, y).shape == x.shape and model.discrete_likelihood
    if settings.get("task") == "quadrants":  # only the missing 3 of 4 quadrants are scored
        assert model.scored_dims == 3 * 16 * 16 * 3 // 4


@pytest.mark.parametrize("name", ["vae", "hvae", "cvae"])
def test_off_grid_data_is_one_line_data_error(name):
    model = _model(name, (3, 16, 16))
    x = _patterns(2)
    model.check_data(x)
    with pytest.raises(DataError, match="8-bit grid k/255") as info:
        model.check_data(x + 0.3 / 255)
    assert "\n" not in str(info.value)


def test_discrete_likelihood_is_a_capability_of_the_likelihood():
    assert {k: v.discrete for k, v in LIKELIHOODS.items()} == {
        "bernoulli": True, "gaussian": False, "logistic": True, "dequantized": True}
    assert not MODELS["vae"](MODELS["vae"].make_config(likelihood="gaussian"),
                             (1, 8, 8)).discrete_likelihood
    assert not MODELS["gmm"].discrete_likelihood


def test_a_conv_vae_learns_colour_images_and_reports_bits_per_dim():
    torch.manual_seed(0)
    x = _patterns(600)
    dataset = tensor_dataset(x[:500], x[500:], name="colour", kind="image")
    model = _model("vae", dataset.shape, arch="conv", latent_dim=8, hidden=(64,))
    before = evaluate(model, dataset.test_x, num_samples=10, iwae_ks=(5,))
    train(model, dataset, TrainConfig(epochs=4, batch_size=50, lr=2e-3), progress=False)
    after = evaluate(model, dataset.test_x, num_samples=10, iwae_ks=(5,))
    assert after["test_elbo"] > before["test_elbo"] + 200  # nats per image of 768 values
    d = 3 * 16 * 16
    assert after["bpd_dims"] == d
    for key in ("test_elbo", "test_iwae", "test_log_likelihood"):
        assert after[f"{key}_bpd"] == pytest.approx(-after[key] / (d * LN2), rel=1e-12)
    assert after["test_log_likelihood_bpd_stderr"] == pytest.approx(
        after["test_log_likelihood_stderr"] / (d * LN2))
    assert after["test_elbo_bpd"] >= after["test_log_likelihood_bpd"] > 0
    assert after["test_elbo_bpd"] < before["test_elbo_bpd"] - 0.3
    check_keys(after)


def test_a_dequantized_gaussian_vae_trains_and_reports_bits():
    torch.manual_seed(0)
    x = _patterns(300)
    dataset = tensor_dataset(x[:250], x[250:], name="colour", kind="image")
    model = MODELS["vae"](MODELS["vae"].make_config(likelihood="dequantized", arch="conv",
                                                    latent_dim=4, hidden=(32,)), x.shape[1:])
    assert check_model_guide(model, x[:4]) == []
    with pytest.raises(DataError, match="dequantized Gaussian"):
        model.check_data(x + 0.3 / 255)
    before = evaluate(model, dataset.test_x, num_samples=10, iwae_ks=(5,))
    train(model, dataset, TrainConfig(epochs=3, batch_size=50, lr=3e-3), progress=False)
    after = evaluate(model, dataset.test_x, num_samples=10, iwae_ks=(5,))
    assert after["test_elbo"] > before["test_elbo"]
    assert after["test_elbo_bpd"] == pytest.approx(-after["test_elbo"] / (768 * LN2))
    assert model.sample(2).shape == (2, 3, 16, 16)


def test_a_gaussian_vae_reports_no_bits():
    x = _patterns(20)
    model = MODELS["vae"](MODELS["vae"].make_config(likelihood="gaussian", latent_dim=2,
                                                    hidden=(8,)), x.shape[1:])
    assert not any(k.endswith("_bpd") for k in evaluate(model, x, num_samples=5, iwae_ks=()))


def test_bits_per_dim_rows_in_the_summary():
    assert bits_per_dim(-100.0 * LN2, 100) == pytest.approx(1.0)
    rows = dict(summary_rows({"test_elbo": -1.5, "test_elbo_bpd": 2.0, "iwae_k": 5,
                              "test_log_likelihood_bpd": 1.5,
                              "test_log_likelihood_bpd_stderr": 0.01}))
    assert rows["test ELBO [bits/dim]"] == "2.0000"
    assert rows["test -log p(x) [bits/dim]"] == "1.5000 +- 0.0100"
    assert METRICS["test_log_likelihood_bpd"].bound


# -- the run layer and pictures -----------------------------------------------------------------
def _is_colour(path: Path) -> bool:
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return image.shape[-1] == 3 and (np.abs(image[..., 0] - image[..., 1]).max() > 30
                                     or np.abs(image[..., 1] - image[..., 2]).max() > 30)


def test_the_cli_trains_a_colour_vae_and_writes_bits_and_colour_pictures(tmp_path, capsys,
                                                                        monkeypatch):
    def load():
        x = BENCH.colour_patterns(300, 16)
        return data.RawData(x[:240], None, x[240:], None, "image")

    monkeypatch.setitem(data.DATASETS, "colour-test", data.DataSpec(load, "image"))
    out = tmp_path / "run"
    assert main(["train", "vae", "--dataset", "colour-test", "--binarize", "none",
                 "--likelihood", "logistic", "--arch", "conv", "--latent-dim", "4",
                 "--hidden", "32", "--epochs", "2", "--batch-size", "40", "--eval-samples",
                 "50", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test ELBO [bits/dim]" in printed and "test -log p(x) [bits/dim]" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    check_keys(metrics)
    assert metrics["test_elbo_bpd"] == pytest.approx(-metrics["test_elbo"] / (768 * LN2))
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "traversal.png"):
        assert Image.open(out / name).mode == "RGB", name
    assert _is_colour(out / "reconstructions.png")  # the inputs' rows are coloured patterns
    assert main(["evaluate", str(out), "--num-samples", "50", "--no-progress"]) == 0  # reopens
    assert "test -log p(x) [bits/dim]" in capsys.readouterr().out
    again = json.loads((out / "metrics.json").read_text())
    assert again["test_log_likelihood_bpd"] == pytest.approx(metrics["test_log_likelihood_bpd"])


def test_pictures_of_colour_images_are_in_colour_and_grey_stays_grey(tmp_path):
    torch.manual_seed(0)
    x = _patterns(8)
    model = _model("vae", x.shape[1:], arch="conv", latent_dim=2, hidden=(16,))
    with torch.no_grad():  # a decoder that draws red whatever z
        last = model.decoder.deconv[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -0.5, -0.5, -3.0, -3.0, -3.0]))
    assert _is_colour(save_samples(model, tmp_path / "s.png", num=4))
    assert _is_colour(save_reconstructions(model, x, tmp_path / "r.png", num=4))
    assert _is_colour(save_interpolation(model, x, tmp_path / "i.png", num_pairs=2, steps=3))
    grey = _model("vae", (1, 8, 8), latent_dim=2, hidden=(8,))
    path = save_samples(grey, tmp_path / "g.png", num=4)
    assert not _is_colour(path)


@pytest.mark.cuda
@pytest.mark.parametrize("likelihood", ["logistic", "dequantized"])
def test_colour_vae_trains_and_reports_bits_on_cuda(likelihood):
    torch.manual_seed(0)
    x = _patterns(300, size=32).to("cuda")
    dataset = tensor_dataset(x[:250], x[250:], name="colour", kind="image")
    model = MODELS["vae"](MODELS["vae"].make_config(likelihood=likelihood, arch="conv",
                                                    latent_dim=4, hidden=(32,)),
                          x.shape[1:]).to("cuda")
    assert check_model_guide(model, x[:4]) == []
    for objective, k in (("trace", 1), ("iwae", 3)):
        train(model, dataset, TrainConfig(epochs=1, batch_size=50, device="cuda",
                                          objective=objective, num_particles=k), progress=False)
    m = evaluate(model, dataset.test_x, num_samples=20, iwae_ks=(5,))
    assert m["test_log_likelihood_bpd"] == pytest.approx(
        -m["test_log_likelihood"] / (3 * 32 * 32 * LN2))
    assert model.sample(4).device.type == "cuda"
