"""beta, KL warm-up and free bits: exact values on a VAE, the schedule, resume, refusals."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.annealing import (
    FreeBitsELBO,
    LatentScaleMessenger,
    kl_weight,
    scaled_programs,
)
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.models import build_model
from pyro_vae.objectives import build_objective
from pyro_vae.run_config import RunConfig
from pyro_vae.runs import RunFolder
from pyro_vae.runtime import set_seed
from pyro_vae.testing import assert_same_parameters
from pyro_vae.train import TrainConfig, train

SMALL = {"latent_dim": 4, "hidden": (32,)}


def _vae(seed=0):
    set_seed(seed)
    data = load_dataset("digits")
    return build_model("vae", data.shape, **SMALL), data


def _analytic_kl(model, x):
    loc, scale = model.encoder(x)
    return 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).detach()  # (B, D), per dimension


def _loss(elbo, model_fn, guide_fn, x, **kwargs):
    pyro.set_rng_seed(3)
    return elbo.loss(model_fn, guide_fn, x, None, **kwargs)


def test_kl_weight_ramps_linearly_from_zero_to_beta():
    assert kl_weight(4.0, 0, epoch=0) == 4.0
    ramp = [kl_weight(2.0, 2, epoch=e, step=s, num_batches=4) for e in range(3) for s in range(4)]
    assert ramp[0] == 0.0 and ramp[4] == 1.0 and ramp[8:] == [2.0] * 4
    assert ramp[:8] == pytest.approx([2.0 * i / 8 for i in range(8)])


def test_the_weight_scales_only_the_latent_sites_in_both_programs():
    model, data = _vae()
    x = data.test_x[:6]
    model_fn, guide_fn, handler = scaled_programs(model, model.latent_sites, 0.25)
    guide_trace = poutine.trace(guide_fn).get_trace(x, None)
    model_trace = poutine.trace(poutine.replay(model_fn, trace=guide_trace)).get_trace(x, None)
    assert guide_trace.nodes["z"]["scale"] == 0.25 and model_trace.nodes["z"]["scale"] == 0.25
    assert model_trace.nodes["x"]["scale"] == 1.0


@pytest.mark.parametrize("weight", [0.0, 0.5, 4.0])
def test_beta_weighs_the_analytic_kl_exactly(weight):
    model, data = _vae()
    x = data.test_x[:20]
    elbo = TraceMeanField_ELBO()
    plain = _loss(elbo, model.model, model.guide, x)
    model_fn, guide_fn, _ = scaled_programs(model, model.latent_sites, weight)
    weighted = _loss(elbo, model_fn, guide_fn, x)
    kl = _analytic_kl(model, x).sum().item()
    assert weighted - plain == pytest.approx((weight - 1) * kl, rel=1e-4, abs=1e-3)


def test_free_bits_at_zero_is_the_meanfield_elbo_and_floors_each_dimension():
    model, data = _vae()
    x = data.test_x[:20]
    reference = _loss(TraceMeanField_ELBO(), model.model, model.guide, x)
    zero = FreeBitsELBO(0.0, model.latent_sites, analytic=True)
    assert _loss(zero, model.model, model.guide, x) == pytest.approx(reference, rel=1e-5)

    kl_mean = _analytic_kl(model, x).mean(0)  # per dimension, over the batch
    lam = float(kl_mean.median())  # some dimensions below the floor, some above
    floored = _loss(FreeBitsELBO(lam, model.latent_sites, analytic=True), model.model,
                    model.guide, x)
    expected = reference - len(x) * (kl_mean.sum() - kl_mean.clamp(min=lam).sum()).item()
    assert floored == pytest.approx(expected, rel=1e-5)


def test_free_bits_scale_with_the_minibatch_and_the_weight():
    model, data = _vae()
    x = data.test_x[:20]
    elbo = FreeBitsELBO(0.3, model.latent_sites, analytic=True)
    full = _loss(elbo, model.model, model.guide, x)
    assert _loss(elbo, model.model, model.guide, x, num_data=60) == pytest.approx(3 * full,
                                                                                   rel=1e-5)
    recon = full - len(x) * _analytic_kl(model, x).mean(0).clamp(min=0.3).sum().item()
    model_fn, guide_fn, _ = scaled_programs(model, model.latent_sites, 0.5)
    half = _loss(elbo, model_fn, guide_fn, x)
    assert half == pytest.approx(recon + 0.5 * (full - recon), rel=1e-5)


def test_free_bits_stop_the_kl_gradient_below_the_floor():
    """With every dimension under a floor of 100 nats the KL has no gradient: the gradient is
    that of the reconstruction term alone (the ELBO with KL weight 0), not the ELBO's."""
    model, data = _vae()
    x = data.test_x[:20]
    model_fn, guide_fn, _ = scaled_programs(model, model.latent_sites, 0.0)
    cases = [(FreeBitsELBO(100.0, model.latent_sites), model.model, model.guide),
             (Trace_ELBO(), model_fn, guide_fn), (Trace_ELBO(), model.model, model.guide)]
    grads = []
    for elbo, m, g in cases:
        model.zero_grad()
        pyro.set_rng_seed(3)
        elbo.loss_and_grads(m, g, x, None)
        grads.append([p.grad.clone() for p in model.encoder.parameters()])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads[0], grads[1], strict=True))
    assert not all(torch.allclose(a, b, atol=1e-5)
                   for a, b in zip(grads[0], grads[2], strict=True))


def test_training_records_the_schedule_and_resumes_exactly(tmp_path):
    config = dict(batch_size=256, beta=2.0, kl_warmup_epochs=2, free_bits=0.1)
    model, data = _vae()
    straight = train(model, data, TrainConfig(epochs=3, **config), RunFolder(tmp_path / "a"),
                     progress=False)
    nb = data.num_batches(256)
    assert [h["kl_weight"] for h in straight.history] == pytest.approx(
        [2.0 * (nb - 1) / nb / 2, 2.0 * (2 * nb - 1) / nb / 2, 2.0])

    interrupted, data = _vae()
    run = RunFolder(tmp_path / "b")
    train(interrupted, data, TrainConfig(epochs=1, **config), run, progress=False)
    resumed, data = _vae(seed=99)
    result = train(resumed, data, TrainConfig(epochs=3, **config), run, resume=True,
                   progress=False)
    assert_same_parameters(model, resumed)
    assert [h["test_elbo"] for h in result.history] == [h["test_elbo"]
                                                        for h in straight.history]
    assert [h["kl_weight"] for h in result.history] == [h["kl_weight"]
                                                        for h in straight.history]


@pytest.mark.parametrize("settings,message", [
    (dict(objective="iwae", free_bits=0.5), "works with the trace and meanfield"),
    (dict(jit=True, free_bits=0.5), "no jit variant"),
    (dict(jit=True, kl_warmup_epochs=3), "drop --jit"),
    (dict(beta=-1.0), "beta must be >= 0"),
    (dict(kl_warmup_epochs=-2), "kl-warmup-epochs"),
    (dict(free_bits=-0.1), "free-bits must be >= 0"),
], ids=["iwae", "jit-free-bits", "jit-warmup", "beta", "warmup", "free-bits"])
def test_refused_settings_say_why(settings, message):
    model, data = _vae()
    with pytest.raises(ConfigError, match=message):
        build_objective(TrainConfig(epochs=1, **settings), model)


def test_free_bits_refuse_a_latent_that_does_not_factorize():
    import pyro.distributions as dist

    def model(x, y=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(x.new_zeros(2), torch.eye(2)))

    def guide(x, y=None):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.MultivariateNormal(x.new_zeros(2), torch.eye(2)))

    with pytest.raises(ConfigError, match="factorize"):
        FreeBitsELBO(0.5, ["z"]).loss_and_grads(model, guide, torch.zeros(3, 2))


def test_old_runs_with_a_model_beta_move_it_to_training():
    old = {"model": "vae", "model_config": {"latent_dim": 3, "beta": 4.0}, "dataset": "digits",
           "train": {"epochs": 2}, "eval_samples": 10}
    config = RunConfig.from_json(old)
    assert config.model_config == {"latent_dim": 3} and config.train.beta == 4.0
    assert config.eval.num_samples == 10 and config.eval.iwae_ks == (5,)
    assert old["model_config"]["beta"] == 4.0  # untouched
    assert RunConfig.from_json({**old, "model_config": {"latent_dim": 3}}).train.beta == 1.0


def test_the_handler_leaves_weight_one_alone():
    handler = LatentScaleMessenger(["z"], 1.0)
    msg = {"type": "sample", "name": "z", "scale": 2.0}
    handler._process_message(msg)
    assert msg["scale"] == 2.0


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["vae", "ae", "dae"])
def test_models_check_and_train_on_cuda_with_the_schedule(name, tmp_path):
    from pyro_vae.evaluate import disentanglement
    from pyro_vae.latent_plots import save_latent_pictures
    from pyro_vae.testing import check_model_guide

    data = load_dataset("shapes", device="cuda")
    model = build_model(name, data.shape, latent_dim=3, hidden=(32,)).to("cuda")
    assert check_model_guide(model, data.test_x[:8]) == []
    config = TrainConfig(epochs=2, batch_size=512, device="cuda", beta=2.0, kl_warmup_epochs=1,
                         free_bits=0.1 if name == "vae" else 0.0)
    result = train(model, data, config, progress=False)
    assert all(torch.isfinite(torch.tensor(h["test_elbo"])) for h in result.history)
    assert next(model.parameters()).is_cuda
    assert 0 <= disentanglement(model, data)["mig"] <= 1
    assert len(save_latent_pictures(model, data, tmp_path)) == 3


def test_an_old_run_folder_with_a_model_beta_still_evaluates_and_resumes(tmp_path):
    import json

    from pyro_vae.cli import main

    run = tmp_path / "old"
    assert main(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--eval-samples", "0", "--no-progress", "--beta", "3",
                 "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    for key in ("beta", "kl_warmup_epochs", "free_bits"):  # as written before this change
        del config["train"][key]
    config["model_config"]["beta"] = 3.0
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run), "--num-samples", "50", "--no-progress"]) == 0
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2", "--eval-samples",
                 "0", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["beta"] == 3.0 and "beta" not in config["model_config"]
