"""Annealed importance sampling (pyro_vae.ais): against closed forms, unbiased in p, BDMC's
bracket, and through ``pyro-vae evaluate --estimator ais|bdmc``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_vae.ais import AISConfig, ais, log_mean_exp, schedule
from pyro_vae.bdmc import bdmc
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.metrics import check_keys
from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig


def _linear(data_dim: int = 5, latent_dim: int = 2, sigma_raw: float = -0.5) -> LinearGaussian:
    """A probabilistic PCA model with its guide left untrained: q(z|x) = N(0, 0.69^2 I)
    whatever x, far from the posterior, so the annealing has to do the work."""
    torch.manual_seed(1)
    m = LinearGaussian(LinearGaussianConfig(latent_dim=latent_dim), (data_dim,))
    with torch.no_grad():
        m.W.copy_(torch.randn(data_dim, latent_dim))
        m.b.copy_(torch.randn(data_dim))
        m.raw_sigma.fill_(sigma_raw)
    return m


def test_schedules_run_from_zero_to_one_increasing():
    for kind in ("sigmoid", "linear"):
        b = schedule(50, kind)
        assert b[0] == 0 and b[-1] == 1 and len(b) == 51 and bool((b.diff() > 0).all())
    with pytest.raises(ConfigError):
        schedule(10, "cosine")
    with pytest.raises(ConfigError):
        AISConfig(steps=0)


def test_log_mean_exp_and_its_delta_method_stderr():
    w = torch.tensor([[0.0, 1.0], [math.log(3.0), 1.0]], dtype=torch.float64)
    est, se = log_mean_exp(w)
    assert torch.allclose(est, torch.tensor([math.log(2.0), 1.0], dtype=torch.float64))
    # e^w = 1, 3: mean 2, (biased) variance 1 -> se = sqrt(1 / (2 * 4))
    assert se[0].item() == pytest.approx(math.sqrt(1 / 8)) and se[1].item() == 0


def test_ais_matches_the_closed_form_with_a_poor_guide():
    m = _linear()
    x = m.sample(12)
    exact = m.log_marginal(x).double()
    from pyro_vae.importance import importance_bounds

    naive = importance_bounds(m, x, num_samples=16, ks=()).log_px.double()
    r = ais(m, x, config=AISConfig(steps=100, chains=8))
    mc = (r.mc_stderr.pow(2).sum().sqrt() / len(x)).item()
    gap = (r.log_px - exact).mean().item()
    assert abs(gap) < 3 * mc + 0.02, (gap, mc)
    # importance sampling from the same guide with as many samples is far off
    assert (naive - exact).mean().item() < gap - 1.0
    assert r.accept.mean().item() > 0.4


def test_ais_is_unbiased_in_p_on_a_one_dimensional_model():
    """E[w] = p(x) for any number of steps: the mean of the weights over many chains of a
    5-step AIS matches p(x) within its standard error, while the mean log weight is below
    log p(x) (the lower bound's Jensen gap)."""
    m = _linear(data_dim=1, latent_dim=1, sigma_raw=0.0)
    with torch.no_grad():  # posterior N(0.45, 0.33^2) against the guide's N(0, 0.69^2)
        m.W.fill_(2.0)
        m.b.zero_()
    x = torch.tensor([[1.0]])
    exact = m.log_marginal(x).double()
    r = ais(m, x, config=AISConfig(steps=5, chains=4000, leapfrog=2))
    ratio = (r.log_w[:, 0] - exact).exp()
    mean, se = ratio.mean().item(), (ratio.std() / math.sqrt(len(ratio))).item()
    assert abs(mean - 1) < 3.5 * se, (mean, se)
    assert r.log_w[:, 0].mean().item() < exact.item() - 5 * se


def test_bdmc_brackets_the_closed_form_and_tightens_with_steps():
    m = _linear()
    x_like = torch.zeros(1, 5)
    gaps = {}
    for steps in (10, 100):
        b = bdmc(m, 12, x_like, config=AISConfig(steps=steps, chains=4))
        exact = m.log_marginal(b.x).double().mean().item()
        s = b.summary()
        assert s["upper"] >= s["lower"]
        assert s["lower"] - 3 * s["lower_mc_stderr"] <= exact
        assert exact <= s["upper"] + 3 * s["upper_mc_stderr"]
        gaps[steps] = s["gap"]
    assert gaps[100] < gaps[10] / 3, gaps


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ais") / "r"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--eval-samples", "0", "--no-progress", "--out",
                 str(out)]) == 0
    return out


def test_evaluate_estimator_ais_and_bdmc_write_their_metrics(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--estimator", "ais", "--num-samples", "50",
                 "--ais-steps", "5", "--ais-chains", "2", "--no-progress"]) == 0
    assert "test log p(x) [AIS]" in capsys.readouterr().out
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    check_keys(metrics)
    assert len(metrics["test_log_px_ais_per_point"]) == metrics["num_test_points"]
    assert metrics["ais_steps"] == 5 and math.isfinite(metrics["test_log_px_ais"])
    assert main(["evaluate", str(tiny_run), "--estimator", "bdmc", "--num-samples", "0",
                 "--ais-steps", "5", "--ais-chains", "2", "--bdmc-points", "7",
                 "--no-progress"]) == 0
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["bdmc_points"] == 7 and metrics["bdmc_steps"] == 5
    assert metrics["bdmc_upper"] >= metrics["bdmc_lower"]
    assert metrics["ais_steps"] == 5  # the AIS evaluation's own settings are kept


@pytest.mark.parametrize("flags", [["--estimator", "nuts"], ["--ais-steps", "0"],
                                   ["--ais-chains", "-1"], ["--ais-leapfrog", "0"],
                                   ["--bdmc-points", "0", "--estimator", "bdmc"]],
                         ids=["estimator", "steps", "chains", "leapfrog", "points"])
def test_bad_ais_flags_are_one_line_and_exit_2(tiny_run, flags, capsys):
    args = ["evaluate", str(tiny_run), "--no-progress"]
    if "--estimator" not in flags:
        args += ["--estimator", "ais"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_ais_applies_by_structure_not_by_name():
    from types import SimpleNamespace

    from pyro_vae.metrics import EVALUATIONS

    for name in ("ais", "bdmc"):
        applies = EVALUATIONS[name].applies
        asked = SimpleNamespace(estimator=name)
        assert applies(SimpleNamespace(), None, asked, []) is None
        assert "discrete" in applies(SimpleNamespace(has_discrete_latents=True), None, asked, [])
        assert "point mass" in applies(SimpleNamespace(deterministic_code=True), None, asked, [])
        assert "global" in applies(SimpleNamespace(), None, asked, ["theta"])
        assert "not asked" in applies(SimpleNamespace(), None, SimpleNamespace(estimator="is"),
                                      [])


def test_a_point_mass_guide_is_refused_in_one_line():
    from pyro_vae.models import build_model

    model = build_model("ae", (5,), latent_dim=2, hidden=(8,))
    with pytest.raises(ConfigError, match="point mass"):
        ais(model, torch.rand(3, 5).round(), config=AISConfig(steps=2, chains=2))
