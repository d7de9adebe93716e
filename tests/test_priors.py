"""The VAE's learned priors (mog, vamp, flow) and the IAF guide: pyro_vae/models/priors.py."""

import json
import math

import pytest
import torch
from torch import nn

from pyro_vae.cli import main
from pyro_vae.evaluate import latent_usage
from pyro_vae.models import build_model
from pyro_vae.models.priors import POSTERIORS, PRIORS, VampPrior
from pyro_vae.runner import open_run
from pyro_vae.testing import check_model_guide

SHAPE = (1, 4, 4)


def _vae(prior="normal", posterior="diag", latent_dim=2, **kw):
    return build_model("vae", SHAPE, latent_dim=latent_dim, hidden=(8,), prior=prior,
                       posterior=posterior, prior_components=3, **kw)


def _perturb_(module: nn.Module, scale: float = 0.5) -> None:
    """Move every parameter off its start (the flows start at the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _x(n=6):
    return torch.bernoulli(torch.rand(n, *SHAPE))


@pytest.mark.parametrize("posterior", list(POSTERIORS))
@pytest.mark.parametrize("prior", list(PRIORS))
def test_every_prior_and_posterior_passes_check_model_guide(prior, posterior):
    model = _vae(prior, posterior)
    model.init_from_data(_x(10))
    assert check_model_guide(model, _x()) == []


def _grid(lim=9.0, n=301):
    t = torch.linspace(-lim, lim, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return z, (t[1] - t[0]) ** 2


@pytest.mark.parametrize("prior", ["mog", "vamp", "flow"])
def test_learned_prior_densities_integrate_to_one(prior):
    model = _vae(prior).double()
    _perturb_(model.prior, 0.1 if prior == "flow" else 0.3)  # the flow's tails: in the grid
    z, area = _grid()
    with torch.no_grad():
        log_p = model.prior_dist(_x(1).double()).log_prob(z)
    assert log_p.shape == (z.shape[0],)
    assert float(log_p.exp().sum() * area) == pytest.approx(1.0, abs=2e-3)
    normal = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    near = z.norm(dim=-1) < 3
    assert float((log_p - normal)[near].abs().max()) > 0.1  # not N(0, I)


def test_vamp_prior_is_the_mean_of_the_encoder_densities_at_the_pseudo_inputs():
    model = _vae("vamp", latent_dim=3)
    assert isinstance(model.prior, VampPrior)
    z = torch.randn(4, 5, 3)  # particles x points
    loc, scale = model.encoder(model.prior.pseudo_inputs)
    each = torch.distributions.Normal(loc, scale).log_prob(z.unsqueeze(-2)).sum(-1)  # (4, 5, K)
    expected = each.logsumexp(-1) - math.log(3)
    torch.testing.assert_close(model.prior_dist(_x(5)).log_prob(z), expected)
    x = _x(8)
    model.init_from_data(x)  # pseudo-inputs on training points
    assert all((model.prior.pseudo_inputs[k] == x).flatten(1).all(1).any() for k in range(3))


def test_iaf_guide_density_is_the_change_of_variables_and_starts_as_the_diagonal_guide():
    torch.manual_seed(1)
    model = _vae(posterior="iaf", latent_dim=3, iaf_steps=2)
    x = _x(5)
    loc, scale, h = model.encoder(x)
    base = torch.distributions.Normal(loc, scale)
    z0 = base.sample()
    # an identity-initialised flow: the diagonal guide's density and samples
    torch.manual_seed(2)
    z_iaf = model.q(x).sample()
    torch.manual_seed(2)
    torch.testing.assert_close(z_iaf, base.sample())
    torch.testing.assert_close(model.q(x).log_prob(z0.clone()), base.log_prob(z0).sum(-1))
    torch.testing.assert_close(model.posterior.point(loc, scale, h), loc)
    # trained away from it: log q(z_T) = log N(z_0) - sum_t sum_i log s_t, by hand
    _perturb_(model.posterior, 0.3)
    zt, log_det = z0, 0.0
    for flow in model.posterior.flows:
        mean, log_scale = flow.nn(zt, context=h)
        log_scale = log_scale.clamp(-5.0, 3.0)  # Pyro's clip
        zt = torch.exp(log_scale) * zt + mean
        log_det = log_det + log_scale.sum(-1)
    expected = base.log_prob(z0).sum(-1) - log_det
    point = model.posterior.point(z0, scale, h)  # reconstructions decode the flowed mean
    torch.testing.assert_close(point, zt)
    q = model.q(x)
    # at a fresh copy (no cached inverse): Pyro inverts the steps one dimension at a time
    torch.testing.assert_close(q.log_prob(zt.detach().clone()), expected.detach(),
                               rtol=1e-4, atol=1e-4)
    # and its samples are the flow of its base's samples (one pass), scored from the cache
    torch.manual_seed(3)
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), q.log_prob(z.detach().clone()), rtol=1e-4,
                               atol=1e-4)


def test_sample_draws_from_the_learned_prior():
    model = _vae("mog", latent_dim=2)
    with torch.no_grad():
        model.prior.locs.copy_(torch.tensor([[6.0, -6.0]] * 3))
        model.prior.raw_scales.fill_(-5.0)  # scales ~ 0.008
    model.decode = lambda z: z  # the codes themselves
    z = model.sample(200)
    torch.testing.assert_close(z.mean(0), torch.tensor([6.0, -6.0]), atol=0.05, rtol=0)
    flow = _vae("flow", latent_dim=2)
    _perturb_(flow.prior, 0.5)
    flow.decode = lambda z: z
    torch.manual_seed(0)
    draws = flow.sample(4000).double()
    with torch.no_grad():  # a Monte Carlo check of the flow's density: E_p[z] by the grid
        z_grid, area = _grid()
        p = flow.double().prior_dist(_x(1).double()).log_prob(z_grid).exp() * area
    torch.testing.assert_close(draws.mean(0), (p[:, None] * z_grid).sum(0),
                               atol=4 * float(draws.std(0).max()) / math.sqrt(4000), rtol=0)


def test_latent_usage_of_a_flow_guide_counts_only_used_units():
    """A flow guide has no closed-form mean: active units come from draws, without their
    noise (an IAF guide that ignores x has no active unit)."""
    model = _vae(posterior="iaf", latent_dim=3)
    with torch.no_grad():
        last = model.encoder.net.net[-1]
        last.weight.zero_()
        last.bias.zero_()  # q(z|x) = N(0, softplus(0)^2): the same for every x
    usage = latent_usage(model, _x(300))
    assert usage.active_units == 0 and not usage.kl_is_per_dim
    assert float(usage.posterior_mean_variance.abs().max()) < 0.01


@pytest.mark.parametrize("flags,message", [
    (["--prior", "nope"], "prior"),
    (["--prior", "mog", "--prior-components", "0"], "prior_components"),
    (["--posterior", "full"], "posterior"),
    (["--posterior", "iaf", "--iaf-steps", "0"], "iaf_steps"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code = main(["train", "vae", "--dataset", "digits", "--epochs", "1", *flags,
                 "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_train_evaluate_sample_round_trip_and_old_configs_open(tmp_path, capsys):
    run = tmp_path / "vamp-iaf"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--prior", "vamp", "--prior-components", "5",
                 "--posterior", "iaf", "--eval-samples", "50", "--out", str(run),
                 "--no-progress"]) == 0
    assert main(["evaluate", str(run), "--num-samples", "50", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 1.0
    assert main(["sample", str(run), "--num", "4", "--out", str(tmp_path / "s.png")]) == 0
    opened = open_run(run)
    assert opened.model.config.prior == "vamp" and opened.model.config.posterior == "iaf"
    # a run folder of before these settings: config.json without them opens as normal/diag
    old = tmp_path / "old"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--eval-samples", "0", "--out", str(old),
                 "--no-progress"]) == 0
    config = json.loads((old / "config.json").read_text())
    for key in ("prior", "prior_components", "flow_steps", "posterior", "iaf_steps"):
        del config["model_config"][key]
    (old / "config.json").write_text(json.dumps(config))
    opened = open_run(old)
    assert opened.model.config.prior == "normal" and opened.model.config.posterior == "diag"
    capsys.readouterr()
    assert main(["evaluate", str(old), "--num-samples", "50", "--no-progress"]) == 0
