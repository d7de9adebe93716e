"""The VQ-VAE pair, its codebook terms, the PixelCNN prior over its codes and the prior stage."""

import itertools
import json
import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_vae.cli import main
from pyro_vae.codebook import code_measures, usage
from pyro_vae.data import load_dataset
from pyro_vae.metrics import check_keys
from pyro_vae.models import build_model
from pyro_vae.models.code_prior import PixelCNNPrior
from pyro_vae.prior_stage import prior_folder, resume_with_prior
from pyro_vae.run_config import RunConfig
from pyro_vae.runner import run
from pyro_vae.testing import check_model_guide

TINY = {"codebook_size": 8, "code_dim": 4, "num_positions": 4, "hidden": (16,),
        "prior_channels": 8, "prior_layers": 2}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _model(digits, **settings):
    model = build_model("vqvae", digits.shape, **(TINY | settings))
    model.init_from_data(digits.train_x[:200])
    return model


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("prior", ["uniform", "pixelcnn"])
@pytest.mark.parametrize("update", ["loss", "ema"])
def test_check_model_guide_passes(digits, arch, prior, update):
    model = _model(digits, arch=arch, prior=prior, codebook_update=update)
    assert check_model_guide(model, digits.test_x[:8]) == []


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_the_straight_through_gradient_reaches_the_encoder(digits, arch):
    """Without the codebook terms (eval mode), the ELBO's gradient for the encoder is the
    decoder's gradient at z_q passed to z_e unchanged: d/dphi = (dL/dz_q) dz_e/dphi."""
    model = _model(digits, arch=arch).eval()
    x = digits.test_x[:16]
    params = list(model.encoder.parameters())
    elbo = -Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    z_e = model.encode_grid(x)
    z_q = model.codebook[model.code_indices(x)].detach().requires_grad_(True)
    recon = model._likelihood(model._decode_out(z_q)).log_prob(x).sum()
    (dz_q,) = torch.autograd.grad(recon, z_q)
    expected = torch.autograd.grad(z_e, params, grad_outputs=dz_q)
    got = _grads(elbo, params)
    assert any(g.abs().sum() > 0 for g in got)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-4)


def _penalty(model, x):
    model.train()
    site = poutine.trace(model.guide).get_trace(x).nodes["z"]
    return site["fn"].base_dist.log_density.sum() if hasattr(site["fn"], "base_dist") \
        else site["fn"].log_density.sum()


def test_codebook_term_moves_the_codebook_and_commitment_the_encoder(digits):
    x = digits.test_x[:16]
    model = _model(digits, commitment=0.0)
    enc = list(model.encoder.parameters())
    codebook_only = _penalty(model, x)
    g_enc, (g_book,) = _grads(codebook_only, enc), _grads(codebook_only, [model.codebook])
    assert all(g.abs().sum() == 0 for g in g_enc) and g_book.abs().sum() > 0
    # closed form: d/de_k sum ||sg[z_e] - e_k||^2 = 2 sum_{i: k_i = k} (e_k - z_e,i)
    z_e, k = model.encode_grid(x).detach(), model.code_indices(x)
    expected = torch.zeros_like(model.codebook).index_add_(
        0, k.flatten(), 2 * (model.codebook[k] - z_e).reshape(-1, z_e.shape[-1]))
    assert torch.allclose(g_book, expected.detach(), atol=1e-5)
    model.config.commitment = 1.0
    commitment = _penalty(model, x) - codebook_only  # beta * commitment at beta = 1
    assert torch.allclose(commitment, ((z_e - model.codebook[k]) ** 2).sum(), rtol=1e-5)
    g_enc, (g_book,) = _grads(commitment, enc), _grads(commitment, [model.codebook])
    assert any(g.abs().sum() > 0 for g in g_enc) and g_book.abs().sum() == 0


def test_evaluation_leaves_the_terms_out_so_the_elbo_is_the_uniform_bound(digits):
    model = _model(digits).eval()
    x = digits.test_x[:16]
    elbo = -Trace_ELBO().loss(model.model, model.guide, x) / len(x)
    m = code_measures(model, x)
    assert elbo == pytest.approx(-m["test_nll_uniform_prior"], rel=1e-5)
    L, K = m["code_positions"], m["codebook_size"]
    assert m["test_nll_uniform_prior"] == pytest.approx(m["test_recon_nll"] + L * math.log(K))


def test_usage_and_perplexity():
    u = usage(torch.tensor([[0, 1], [2, 3]]), 8)
    assert u["codes_used"] == 4 and u["codebook_usage"] == 0.5
    assert u["codebook_perplexity"] == pytest.approx(4.0)
    assert usage(torch.zeros(5, 3, dtype=torch.long), 8)["codebook_perplexity"] == 1.0


@pytest.mark.parametrize("grid", [(1, 5), (3, 3)])
def test_the_pixelcnn_prior_is_causal(grid):
    net = PixelCNNPrior(4, grid, channels=8, layers=3)
    L = grid[0] * grid[1]
    codes = torch.randint(4, (1, L))
    base = net.logits(codes)
    for j in range(L):
        changed = codes.clone()
        changed[0, j] = (changed[0, j] + 1) % 4
        logits = net.logits(changed)
        assert torch.equal(logits[0, :j + 1], base[0, :j + 1]), j
        if j < L - 1:  # the network does look at earlier positions
            assert not torch.equal(logits[0, j + 1:], base[0, j + 1:]), j


@pytest.mark.parametrize("grid,codes", [((1, 3), 2), ((2, 2), 2), ((1, 2), 3)])
def test_the_pixelcnn_prior_is_normalized(grid, codes):
    net = PixelCNNPrior(codes, grid, channels=8, layers=2)
    L = grid[0] * grid[1]
    every = torch.tensor(list(itertools.product(range(codes), repeat=L)))
    total = net.log_prob(every).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_the_prior_is_maximum_likelihood_and_beats_the_uniform_bound(digits):
    """The prior's own Pyro program has no latents: Trace_ELBO's loss is -log p(codes); after
    a short fit on a VQ-VAE's training codes it is below L log K."""
    model = _model(digits).eval()
    codes = model.code_indices(digits.train_x[:500]).detach()
    net = PixelCNNPrior(model.num_codes, model.grid, channels=16, layers=2)
    loss = Trace_ELBO().loss(net.model, net.guide, codes)
    assert loss == pytest.approx(-net.log_prob(codes).sum().item(), rel=1e-5)
    svi = SVI(net.model, net.guide, Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(30):
        svi.step(codes)
    uniform = codes.shape[1] * math.log(model.num_codes)
    fitted = -net.log_prob(codes).mean().item()
    assert fitted < uniform - 1.0, (fitted, uniform)


def _run_cli(argv, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(argv)
    return code, capsys.readouterr()


def test_cli_train_then_sample_round_trip(tmp_path, capsys):
    out = tmp_path / "vq"
    flags = [f"--{k.replace('_', '-')}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
             for k, v in TINY.items()]
    code, cap = _run_cli(["train", "vqvae", "--dataset", "digits", "--epochs", "2",
                          "--prior-epochs", "2", "--eval-samples", "0", "--out", str(out),
                          "--no-progress", *flags], capsys)
    assert code == 0, cap.err
    assert f"run: {out}" in cap.out and f"run: {prior_folder(out)}" in cap.out
    first = json.loads((out / "metrics.json").read_text())
    second = json.loads((prior_folder(out) / "metrics.json").read_text())
    for m in (first, second):
        check_keys(m)
        assert 1 <= m["codebook_perplexity"] <= 8 and 0 < m["codebook_usage"] <= 1
    assert "test_nll_learned_prior" not in first
    assert second["test_nll_uniform_prior"] == pytest.approx(first["test_nll_uniform_prior"])
    assert second["test_nll_learned_prior_bpd"] > 0
    config = json.loads((prior_folder(out) / "config.json").read_text())
    assert config["model_config"]["prior"] == "pixelcnn"
    assert config["init_from"] == str(out.absolute())
    for folder, name in ((out, "uniform.png"), (prior_folder(out), "learned.png")):
        code, cap = _run_cli(["sample", str(folder), "--num", "4", "--out",
                              str(tmp_path / name), "--device", "cpu"], capsys)
        assert code == 0, cap.err
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("flags,message", [
    (["--codebook-size", "0"], "codebook-size"),
    (["--prior", "transformer"], "prior"),
    (["--prior", "pixelcnn", "--prior-epochs", "3"], "prior-epochs"),
    (["--codebook-update", "kmeans"], "codebook update"),
    (["--ema-decay", "1.5"], "ema-decay"),
    (["--commitment", "-1"], "commitment"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    code, cap = _run_cli(["train", "vqvae", "--dataset", "digits", "--epochs", "1",
                          "--out", str(tmp_path / "bad"), *flags], capsys)
    assert code == 2
    assert cap.err.count("\n") == 1 and message in cap.err and "Traceback" not in cap.err
    assert not (tmp_path / "bad").exists()


def test_resume_starts_a_prior_stage_the_run_had_not_reached(tmp_path):
    out = tmp_path / "vq"
    config = RunConfig.for_model("vqvae", dataset="digits", eval={"num_samples": 0,
                                                                  "pictures": False},
                                 train={"epochs": 1}, **TINY, prior_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(config, out, progress=False)  # the first stage only, as if stopped after it
        assert not prior_folder(out).exists()
        results = resume_with_prior(out, progress=False, epochs=2)
    assert [r.run.path for r in results] == [out, prior_folder(out)]
    assert results[1].metrics["test_prior_gain"] is not None
    pyro.clear_param_store()


@pytest.mark.parametrize("update", ["loss", "ema"])
def test_fast_engine_steps_do_not_read_the_device(update):
    from test_device_harness import _step_reads, config

    settings = TINY | {"codebook_update": update}
    assert not _step_reads(config("vqvae", objective="trace", settings=settings))


def test_both_stages_and_the_codebook_evaluation_on_a_simulated_gpu(tmp_path):
    """The device-harness entry of the prior stage: trains, evaluates and samples on the
    simulated CUDA device (pyro_vae's device rules: no CPU tensor meets a device one)."""
    from device_harness import simulated_cuda
    from test_device_harness import config

    from pyro_vae.prior_stage import run_with_prior

    cfg = config("vqvae", settings=TINY | {"prior_epochs": 1, "codebook_update": "ema"})
    with simulated_cuda(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = run_with_prior(cfg, tmp_path / "vq", progress=False)
        assert second.metrics["device"].startswith("cuda")
        assert math.isfinite(second.metrics["test_nll_learned_prior"])
        assert second.run.model.sample(3).is_cuda


def test_a_resumed_ema_run_matches_an_uninterrupted_one(tmp_path):
    """The EMA statistics wait in buffers (in the checkpoint) and are applied once per step,
    so stopping after epoch 1 and resuming gives the uninterrupted run's codebook exactly."""
    from pyro_vae.runner import resume
    from pyro_vae.runs import RunFolder

    config = RunConfig.for_model("vqvae", dataset="digits", eval={"num_samples": 0,
                                                                  "pictures": False},
                                 train={"epochs": 2, "batch_size": 500},
                                 **TINY, arch="mlp", codebook_update="ema")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(config, tmp_path / "whole", progress=False)
        run(config.with_changes(train=config.train.__class__(
            **{**config.train.__dict__, "epochs": 1})), tmp_path / "parts", progress=False)
        resume(tmp_path / "parts", progress=False, epochs=2)
    whole, parts = (RunFolder(tmp_path / name).load_checkpoint()["model"]
                    for name in ("whole", "parts"))
    assert whole.keys() == parts.keys()
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
