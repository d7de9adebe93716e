"""The chunked importance sampler: streaming equals stored, one weight for training and
evaluation, the data-plate requirement, and the per-point ordering of the bounds."""

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.annealing import LatentScaleMessenger
from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.estimators.traces import (
    evaluation_log_prob,
    importance_traces,
    point_log_prob,
    point_log_probs,
    sample_sites,
)
from pyro_vae.importance import (
    WeightStats,
    importance_bounds,
    log_weights,
    sampled_bounds,
    stored_log_weights,
    trace_log_weights,
    weight_chunks,
)
from pyro_vae.models import MODELS, LatentModel, build_model
from pyro_vae.objectives import make_objective

S, N, KS = 200, 37, (5, 50)


class Replay:
    """A weight function that hands out slices of a fixed (S, N) matrix: point n is x[n, 0],
    particles follow on from what each block of points has had so far."""

    def __init__(self, w: torch.Tensor):
        self.w, self.given, self.shapes = w, {}, []

    def __call__(self, model, xb, yb, k):
        start = int(xb[0, 0])
        first = self.given.get(start, 0)
        self.given[start] = first + k
        self.shapes.append((k, len(xb)))
        return self.w[first:first + k, start:start + len(xb)]


def _heavy_tailed_weights() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    spread = torch.rand(N, generator=g, dtype=torch.float64) * 4  # from tame to heavy tails
    return (-30 + 5 * torch.randn(N, generator=g, dtype=torch.float64)
            + spread * torch.randn(S, N, generator=g, dtype=torch.float64))


def _from_matrix(w: torch.Tensor, ks) -> dict:
    """Every estimate computed directly from the stored (S, N) matrix."""
    s, n = w.shape
    p = torch.softmax(w, 0)  # normalized weights: relative variance S sum p^2 - 1
    out = {"elbo": w.mean(0), "log_px": torch.logsumexp(w, 0) - math.log(s),
           "mc": ((s * p.pow(2).sum(0) - 1).clamp_min(0) / s).sqrt(), "sd1": w.std(0)}
    for k in ks:
        est = torch.logsumexp(w.reshape(s // k, k, n), 1) - math.log(k)
        out[k] = est.mean(0), est.std(0)
    return out


@pytest.mark.parametrize("max_elements,chunks", [
    (2**30, {(200, 37)}),  # (particles, points): one chunk
    (6400, {(100, 37)}),  # particles split in two, all points at once
    (500, {(50, 10), (50, 7)}),  # four blocks of points, four chunks of particles each
], ids=["one-chunk", "particles-split", "points-and-particles-split"])
def test_streaming_accumulator_equals_the_stored_weight_matrix(max_elements, chunks):
    w = _heavy_tailed_weights()
    x = torch.arange(N, dtype=torch.float64)[:, None]
    replay = Replay(w)
    stats = WeightStats(N, KS)
    for chunk in weight_chunks(replay, None, x, None, S, math.lcm(*KS), max_elements):
        assert chunk.log_w.shape[0] % 50 == 0  # no group straddles two chunks
        stats.add(chunk)
    assert set(replay.shapes) == chunks
    b, ref = stats.bounds(), _from_matrix(w, KS)

    def close(a, e):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)

    close(b.elbo, ref["elbo"])
    close(b.log_px, ref["log_px"])
    close(b.log_px_mc_stderr, ref["mc"])
    close(b.mc_sd[1], ref["sd1"])
    for k in KS:
        close(b.iwae[k], ref[k][0])
        close(b.mc_sd[k], ref[k][1])
    s = b.summary()
    for k in KS:
        mean, sd = ref[k]
        assert s["iwae_stderr"][k] == pytest.approx(mean.std().item() / math.sqrt(N), rel=1e-10)
        assert s["iwae_mc_stderr"][k] == pytest.approx(
            math.sqrt(sd.pow(2).sum().item() / (S // k)) / N, rel=1e-10)
        assert s["iwae_mc_sd"][k] == pytest.approx(sd.pow(2).mean().sqrt().item(), rel=1e-10)
    assert s["elbo_mc_stderr"] == pytest.approx(
        math.sqrt(ref["sd1"].pow(2).sum().item() / S) / N, rel=1e-10)
    # the ordering holds for any weights, heavy-tailed or not: the groups nest
    assert torch.all(b.elbo <= b.iwae[5] + 1e-12)
    assert torch.all(b.iwae[5] <= b.iwae[50] + 1e-12)
    assert torch.all(b.iwae[50] <= b.log_px + 1e-12)
    # and the stored matrix comes back whole from the same generator
    assert torch.equal(stored_log_weights(Replay(w), None, x, None, S, max_elements), w)


def test_bounds_of_a_vae_are_those_of_the_very_samples_drawn_and_ordered():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=3, hidden=(16,))
    x = data.test_x[:60]
    torch.manual_seed(4)  # one chunk of 200 particles for all 60 points, both ways
    w = stored_log_weights(log_weights, model, x, None, S)
    torch.manual_seed(4)
    b = sampled_bounds(log_weights, model, x, None, S, KS)
    ref = _from_matrix(w, KS)
    torch.testing.assert_close(b.log_px, ref["log_px"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(b.iwae[50], ref[50][0], rtol=1e-12, atol=1e-12)
    assert torch.all(b.elbo <= b.iwae[5]) and torch.all(b.iwae[5] <= b.iwae[50])
    assert torch.all(b.iwae[50] <= b.log_px)
    assert (b.log_px - b.elbo).min() > 0  # a real gap, so the ordering is not vacuous


def test_training_and_evaluation_weights_agree_on_the_same_minibatch_traces():
    data = load_dataset("digits")
    model = build_model("vae", data.shape, latent_dim=3, hidden=(16,))
    x = data.test_x[:10]
    elbo = make_objective("iwae", 6)
    nesting = elbo.max_plate_nesting  # the particles' plate is the leftmost batch dim
    model_trace, guide_trace = importance_traces(elbo, model.model, model.guide, (x,),
                                                 {"num_data": 70})
    train = point_log_probs(model_trace, guide_trace)
    evaluation = trace_log_weights(model_trace, guide_trace, nesting)
    assert train.data_scale == pytest.approx(7.0) and evaluation.shape == (6, 10)
    torch.testing.assert_close(train.log_w, evaluation)
    # the training log densities do carry the subsample scale that was divided out
    scaled = sum(point_log_prob(n, s, s["log_prob"], nesting)
                 for n, s in sample_sites(model_trace))
    torch.testing.assert_close(scaled, 7 * train.log_p)

    # a KL weight stays inside the training weights and never enters an evaluation
    with LatentScaleMessenger(["z"], 0.3):
        model_trace, guide_trace = importance_traces(elbo, model.model, model.guide, (x,),
                                                     {"num_data": 70})
    train = point_log_probs(model_trace, guide_trace)

    def site(trace, name):
        s = trace.nodes[name]
        return point_log_prob(name, s, evaluation_log_prob(s), nesting)

    kl_sample = site(model_trace, "z") - site(guide_trace, "z")
    torch.testing.assert_close(train.log_w, site(model_trace, "x") + 0.3 * kl_sample)
    torch.testing.assert_close(trace_log_weights(model_trace, guide_trace, nesting),
                               site(model_trace, "x") + kl_sample)


@dataclass
class GlobalShiftConfig:
    latent_dim: int = 2


class GlobalShift(LatentModel):
    """A global latent ``shift`` outside the data plate: z_n ~ N(0, I), x_n ~ N(W z_n + shift,
    I). It has no per-data-point log weight."""

    name = "global-shift"
    config_class = GlobalShiftConfig
    data_kinds = ("real",)
    latent_sites = ("shift", "z")

    def __init__(self, config=None, data_shape=(10,)):
        super().__init__(config or GlobalShiftConfig(), tuple(data_shape))
        d = data_shape[0]
        self.W = nn.Parameter(torch.randn(d, 2) * 0.1)
        self.A = nn.Parameter(torch.randn(2, d) * 0.1)
        self.m = nn.Parameter(torch.zeros(()))

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with self.data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + shift[..., None, None], 1.0)
                        .to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        pyro.sample("shift", dist.Normal(self.m, 1.0))
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T, 1.0).to_event(1))

    def sample(self, num, y=None):
        return torch.randn(num, 2) @ self.W.T

    def encode(self, x, y=None):
        return x @ self.A.T, torch.ones(len(x), 2)

    def reconstruct(self, x, y=None):
        return x @ self.A.T @ self.W.T


def test_a_global_latent_is_refused_by_evaluation_naming_the_site():
    model, x = GlobalShift(), torch.randn(8, 10)
    with pytest.raises(ConfigError, match="site 'shift' is not"):
        importance_bounds(model, x, num_samples=50)
    with pytest.raises(ConfigError, match="site 'shift' is not"):
        log_weights(model, x, num_particles=3)


@pytest.mark.parametrize("objective", ["iwae", "iwae-dreg", "rws", "vimco"])
def test_a_global_latent_is_refused_by_every_multi_sample_objective(objective):
    model, x = GlobalShift(), torch.randn(8, 10)
    elbo = make_objective(objective, 3)
    with pytest.raises(ConfigError, match="site 'shift' is not"):
        elbo.loss(model.model, model.guide, x)


def test_training_a_global_latent_with_iwae_is_one_line_and_exit_2(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setitem(MODELS, "global-shift", GlobalShift)
    code = main(["train", "global-shift", "--dataset", "linear-gaussian", "--objective", "iwae",
                 "--num-particles", "3", "--epochs", "1", "--eval-samples", "0",
                 "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("pyro-vae: error:")
    assert "site 'shift' is not" in err[0] and "'data' plate" in err[0]
