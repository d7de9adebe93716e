"""The library on a simulated CUDA device (tests/device_harness.py): CUDA's device rules in CI.

(a) planted faults: the harness raises where CUDA would, and counts host reads;
(b) the library through the harness: every model, every objective it takes, both engines,
evaluation, pictures, run/resume on the device and across devices, diagnose.

A test of what CUDA requires that the library does not do yet is ``xfail(strict=True)``,
naming the fault, so the fix flips it.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from device_harness import DeviceRuleError, DeviceTensor, host, simulated_cuda

from pyro_vae import objectives
from pyro_vae.annealing import scaled_programs
from pyro_vae.engine import make_stepper
from pyro_vae.errors import ConfigError
from pyro_vae.models import MODELS
from pyro_vae.run_config import RunConfig
from pyro_vae.runner import build, evaluate_run, open_run, resume, run
from pyro_vae.runtime import resolve_device, rng_state, set_rng_state, set_seed
from pyro_vae.train import train

TINY = {"latent_dim": 2, "hidden": (16,)}
SETTINGS = {"vae": TINY, "ae": TINY, "dae": TINY, "cvae": TINY,
            "hvae": {"latent_dims": (2, 2), "hidden": (16, 16)},
            "bernoulli": {"latent_dim": 4}, "linear": {}, "gmm": {}, "sae": TINY,
            "stacked": {"latent_dim": 2, "hidden": (16, 8), "stage": 2},
            "vade": TINY | {"num_components": 3, "pretrain_epochs": 1}, "ssvae": TINY,
            "dbvae": TINY}
SETTINGS["vqvae"] = {"codebook_size": 8, "code_dim": 4, "prior_channels": 8, "prior_layers": 2}
DATASET = {"linear": "linear-gaussian", "gmm": "gmm-2d"}
EVAL = {"num_samples": 10, "iwae_ks": (5,), "pictures": False}
VAE_VARIANTS = {"mog": {"prior": "mog", "prior_components": 3},  # vae's priors and guides
                "vamp": {"prior": "vamp", "prior_components": 3}, "flow": {"prior": "flow"},
                "iaf": {"posterior": "iaf"}}


def config(model: str, device: str = "cuda", settings=None, **train) -> RunConfig:
    train = {"epochs": 1, "batch_size": 1024, "device": device, **train}
    return RunConfig.for_model(model, dataset=DATASET.get(model, "digits"), train=train,
                               eval=EVAL, **(SETTINGS[model] if settings is None else settings))


def on_device(model) -> bool:
    return all(isinstance(p, DeviceTensor) for p in model.parameters())


# --------------------------------------------------------------- (a) planted faults

def test_device_tensors_report_cuda_and_hold_cpu_values():
    with simulated_cuda():
        assert torch.cuda.is_available() and torch.cuda.device_count() == 1
        x = torch.arange(3.0, device="cuda")
        y = torch.tensor([1.0, 2.0, 3.0], device="cuda") * 2 + x
        assert x.device.type == "cuda" and y.is_cuda and isinstance(y, DeviceTensor)
        assert torch.ones(2).cuda().device == torch.device("cuda", 0)
        assert torch.ones(2).to("cuda").device.type == "cuda"
        assert y.cpu().device.type == "cpu" and not isinstance(y.cpu(), DeviceTensor)
        assert y.cpu().tolist() == [2.0, 5.0, 8.0]
        assert (y + torch.tensor(1.0)).is_cuda  # a 0-dim CPU tensor mixes, as on CUDA
    assert not torch.cuda.is_available() or torch.cuda.device_count() >= 1


def test_leaving_the_simulation_puts_torch_back():
    before = (torch.cuda.is_available, torch.Generator, torch.tensor, torch.Tensor.to,
              torch.Tensor.cuda, torch.save, torch.load, torch.cuda.get_rng_state)
    with simulated_cuda():
        torch.zeros(2, device="cuda")
    after = (torch.cuda.is_available, torch.Generator, torch.tensor, torch.Tensor.to,
             torch.Tensor.cuda, torch.save, torch.load, torch.cuda.get_rng_state)
    assert before == after
    assert not torch.__future__.get_overwrite_module_params_on_conversion()


def _mix():
    x = torch.ones(3, device="cuda")
    w = torch.ones(3)  # the planted CPU tensor
    return x + w


def test_planted_mixed_devices_raise_naming_op_and_line():
    with simulated_cuda(), pytest.raises(DeviceRuleError) as err:
        _mix()
    line = _mix.__code__.co_firstlineno + 2
    assert "aten.add" in str(err.value) and "cpu tensor of shape (3,)" in str(err.value)
    assert f"test_device_harness.py:{line}" in str(err.value)


def test_planted_cpu_generator_for_device_draw_raises():
    with simulated_cuda():
        cpu_gen = torch.Generator(device="cpu").manual_seed(0)
        with pytest.raises(DeviceRuleError, match="generator"):
            torch.randn(3, generator=cpu_gen, device="cuda")
        x = torch.zeros(3, device="cuda")
        with pytest.raises(DeviceRuleError, match="generator"):
            x.normal_(generator=cpu_gen)
        # the CPU draw then a copy (data.py's binarization) and a device generator are fine
        assert torch.rand(3, generator=cpu_gen).to(x.device).is_cuda
        cuda_gen = torch.Generator(device="cuda").manual_seed(0)
        assert cuda_gen.device.type == "cuda"
        assert torch.randn(3, generator=cuda_gen, device="cuda").is_cuda
        with pytest.raises(DeviceRuleError, match="generator"):
            torch.randn(3, generator=cuda_gen)


def test_planted_numpy_of_device_tensor_raises():
    with simulated_cuda() as mode:
        x = torch.ones(3, device="cuda")
        with pytest.raises(DeviceRuleError, match="numpy"):
            x.numpy()
        with pytest.raises(DeviceRuleError, match="numpy"):
            np.asarray(x)
        assert x.cpu().numpy().tolist() == [1.0, 1.0, 1.0]
        assert x.tolist() == [1.0, 1.0, 1.0]  # CUDA allows it: a host read
        assert [r.op for r in mode.host_reads] == ["Tensor.tolist"]
        mode.tolist_raises = True  # stricter: .tolist() only after .cpu()
        with pytest.raises(DeviceRuleError, match="tolist"):
            x.tolist()


def test_planted_host_reads_are_counted():
    with simulated_cuda() as mode:
        x = torch.ones(3, device="cuda")
        float(x.sum())
        x.max().item()
        bool(x.all())
        torch.ones(2).sum().item()  # a CPU read is no device sync
    assert len(mode.host_reads) == 3
    assert all("test_device_harness.py" in r.site for r in mode.host_reads)


def test_planted_bad_device_ordinal_raises():
    with simulated_cuda(), pytest.raises(DeviceRuleError, match="invalid device ordinal"):
        torch.zeros(1, device="cuda:7")


def test_cuda_rng_is_its_own_stream_and_restorable():
    with simulated_cuda():
        torch.manual_seed(1)  # seeds the CPU and (simulated) CUDA generators
        state = torch.cuda.get_rng_state()
        cpu_state = torch.get_rng_state()
        a = host(torch.randn(4, device="cuda"))
        assert torch.equal(torch.get_rng_state(), cpu_state)  # a device draw leaves the CPU's
        torch.cuda.set_rng_state(state)
        assert torch.equal(host(torch.randn(4, device="cuda")), a)
        torch.cuda.manual_seed_all(1)
        assert torch.equal(host(torch.randn(4, device="cuda")), a)


def test_save_load_as_for_cuda(tmp_path):
    path = tmp_path / "t.pt"
    with simulated_cuda():
        torch.save({"w": torch.arange(3.0, device="cuda"), "c": torch.ones(2)}, path)
        loaded = torch.load(path)
        assert loaded["w"].is_cuda and not loaded["c"].is_cuda
        cpu = torch.load(path, map_location="cpu")
        assert type(cpu["w"]) is torch.Tensor and cpu["w"].tolist() == [0.0, 1.0, 2.0]
    if not torch.cuda.is_available():  # without the simulation, the file wants CUDA
        with pytest.raises(RuntimeError):
            torch.load(path)
    assert torch.load(path, map_location="cpu")["w"].tolist() == [0.0, 1.0, 2.0]


def test_modules_optimizers_plates_and_distributions_on_device():
    with simulated_cuda():
        net = torch.nn.Linear(3, 2).to("cuda")
        assert on_device(net) and isinstance(net.weight, torch.nn.Parameter)
        opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
        before = host(net.weight)
        net(torch.ones(5, 3, device="cuda")).pow(2).sum().backward()
        opt.step()
        assert on_device(net) and not torch.equal(host(net.weight), before)
        with pyro.plate("p", 10, subsample_size=4, device=torch.device("cuda")) as idx:
            assert idx.is_cuda
        d = dist.Normal(torch.zeros(3, device="cuda"), torch.ones(3, device="cuda"))
        assert d.rsample().is_cuda and d.log_prob(d.sample()).is_cuda
        with pytest.raises(DeviceRuleError):
            dist.Normal(torch.zeros(3, device="cuda"), 1.0).log_prob(torch.zeros(3))


# --------------------------------------------------------------- (b) the library

def test_resolve_device_cuda():
    with simulated_cuda():
        assert resolve_device("cuda") == torch.device("cuda")
        assert resolve_device("auto").type == "cuda"


def test_device_ordinal_checked_by_resolve_device():
    with simulated_cuda(), pytest.raises(ConfigError):
        resolve_device("cuda:7")


def _train(cfg: RunConfig):
    opened = build(cfg)
    assert opened.data.train_x.is_cuda and on_device(opened.model)
    result = train(opened.model, opened.data, cfg.train, progress=False)
    assert on_device(opened.model) and np.isfinite(result.train_elbo)
    return opened, result


FULL_GRID = ("vae", "bernoulli")  # every objective; the others: their own and one K-sample


def _cases():
    cases = []
    for name, cls in MODELS.items():
        for objective, spec in objectives.OBJECTIVES.items():
            if name not in FULL_GRID and objective not in (
                    cls.default_objective, "rws" if cls.has_discrete_latents else "iwae"):
                continue
            if objective == "enum" and not getattr(cls, "has_discrete_latents", False):
                continue
            try:
                objectives.check_model(SimpleNamespace(objective=objective, free_bits=0), cls)
            except ConfigError:
                continue
            particles = max(2, spec.min_particles) if spec.multi_sample else 1
            cases.append((name, objective, particles))
    return cases


ALL = _cases()
KNOWN: dict = {}  # (model, objective or None): the fault CUDA would show in training


def _xfail_known(name: str, objective: str):
    why = KNOWN.get((name, objective)) or KNOWN.get((name, None))
    return [pytest.mark.xfail(strict=True, raises=Exception, reason=why)] if why else []


@pytest.mark.parametrize("name,objective,particles", [
    pytest.param(n, o, k, id=f"{n}-{o}", marks=_xfail_known(n, o)) for n, o, k in ALL])
def test_every_model_trains_with_every_objective_fast(name, objective, particles):
    with simulated_cuda():
        _train(config(name, objective=objective, num_particles=particles))


@pytest.mark.parametrize("name", [pytest.param(n, marks=_xfail_known(n, None)) for n in MODELS])
def test_every_model_trains_default_objective_svi_engine(name):
    with simulated_cuda():
        _train(config(name, engine="svi", objective=MODELS[name].default_objective))


def _step_reads(cfg: RunConfig, steps: int = 3) -> list:
    """The host reads of device tensors in training steps 2.. of the fast engine."""
    with simulated_cuda() as mode:
        opened = build(cfg)
        model, data, t = opened.model, opened.data, cfg.train
        elbo = objectives.build_objective(t, model)
        model_fn, guide_fn, _ = scaled_programs(model, model.latent_sites, t.beta)
        spec = objectives.get_spec(t.objective)
        stepper = make_stepper("fast", model_fn, guide_fn, elbo, lr=t.lr, eps=t.adam_eps,
                               optim_args=spec.optim_args(t))
        x, y = data.train_x[:64], (None if data.train_y is None else data.train_y[:64])
        stepper.step(x, y, num_data=data.num_train)  # the first step validates (reads)
        n0 = len(mode.host_reads)
        for _ in range(steps - 1):
            stepper.step(x, y, num_data=data.num_train)
        return mode.host_reads[n0:]


@pytest.mark.parametrize("name,train", [
    pytest.param("vae", {"objective": "trace"}, id="vae-trace"),
    pytest.param("vae", {"objective": "meanfield"}, id="vae-meanfield"),
    *[pytest.param("vae", {"objective": o, "num_particles": 2}, id=f"vae-{o}")
      for o in ("iwae", "vimco", "iwae-dreg")],
    pytest.param("vae", {"objective": "trace", "free_bits": 0.1}, id="vae-free-bits"),
    pytest.param("cvae", {"objective": "trace"}, id="cvae-trace"),
    pytest.param("dbvae", {"objective": "trace"}, id="dbvae-trace"),
    pytest.param("vae", {"objective": "trace",
                         "settings": {**SETTINGS["vae"], "likelihood": "logistic"}},
                 id="vae-logistic"),
    *[pytest.param("vae", {"objective": "trace", "settings": {**SETTINGS["vae"], **extra}},
                   id=f"vae-{key}") for key, extra in VAE_VARIANTS.items()],
])
def test_fast_engine_steps_do_not_read_the_device(name, train):
    reads = _step_reads(config(name, **train))
    assert not reads, [r.site for r in reads]


def _params(model) -> dict:
    return {k: host(v).detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_finish_pictures_evaluate_and_diagnose_on_device(tmp_path):
    from pyro_vae.diagnostics import diagnose

    cfg = replace(config("vae"), eval=replace(config("vae").eval, pictures=True))
    with simulated_cuda():
        result = run(cfg, tmp_path / "r", progress=False)
        assert result.metrics["device"].startswith("cuda")
        assert (tmp_path / "r" / "checkpoint.pt").exists() or any((tmp_path / "r").iterdir())
        assert list((tmp_path / "r").glob("*.png"))
        metrics = evaluate_run(tmp_path / "r", device="cuda", progress=False)
        assert np.isfinite(metrics["test_elbo"])
        assert np.isfinite(metrics["mutual_info"])  # the pairwise log q(z | x_m) on the device
        diagnose(tmp_path / "r", points=5, draws=100, ppc_draws=2, nuts=False, device="cuda")


ENGINES = pytest.mark.parametrize("engine", ["fast", "svi"])


@ENGINES
def test_resume_on_device_matches_an_uninterrupted_run(tmp_path, engine):
    with simulated_cuda():
        straight = run(config("vae", epochs=2, engine=engine), tmp_path / "a", progress=False)
        run(config("vae", epochs=1, engine=engine), tmp_path / "b", progress=False)
        resumed = resume(tmp_path / "b", epochs=2, progress=False)
        assert _same(_params(straight.run.model), _params(resumed.run.model))


@ENGINES
def test_trained_on_device_resumed_and_evaluated_on_cpu(tmp_path, engine):
    with simulated_cuda():
        run(config("vae", epochs=1, engine=engine), tmp_path / "r", progress=False)
    resumed = resume(tmp_path / "r", epochs=2, device="cpu", progress=False)
    assert resumed.metrics["device"] == "cpu"
    assert type(next(resumed.run.model.parameters())) is torch.nn.Parameter
    assert np.isfinite(evaluate_run(tmp_path / "r", progress=False)["test_elbo"])
    assert open_run(tmp_path / "r").data.device.type == "cpu"


@ENGINES
def test_trained_on_cpu_resumed_on_device(tmp_path, engine):
    run(config("vae", device="cpu", epochs=1, engine=engine), tmp_path / "r", progress=False)
    with simulated_cuda():
        resumed = resume(tmp_path / "r", epochs=2, device="cuda", progress=False)
        assert resumed.metrics["device"].startswith("cuda") and on_device(resumed.run.model)


def test_rng_state_round_trip_with_cuda_state(tmp_path):
    """What a checkpoint keeps (``map_location="cpu"``) puts every generator back."""
    with simulated_cuda():
        set_seed(3)
        torch.save(rng_state("cuda"), tmp_path / "rng.pt")
        a = (host(torch.randn(3, device="cuda")), torch.randn(3))
        set_rng_state(torch.load(tmp_path / "rng.pt", map_location="cpu"), "cuda")
        b = (host(torch.randn(3, device="cuda")), torch.randn(3))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rng_state_from_a_machine_with_more_gpus():
    """A checkpoint of an older version held every GPU's state (a list); one from cuda:3 holds
    that GPU's. Both resume on this one-GPU machine's cuda:0, which draws as it did then."""
    with simulated_cuda():
        set_seed(3)
        one = rng_state("cuda")
        expected = host(torch.randn(3, device="cuda"))
        for saved in ({**one, "cuda": [one["cuda"]["state"]] * 2},  # older: all GPUs
                      {**one, "cuda": {"index": 3, "state": one["cuda"]["state"]}}):
            set_rng_state(saved, "cuda")
            assert torch.equal(host(torch.randn(3, device="cuda")), expected)


def test_train_classifier_leaves_the_cuda_rng_alone():
    from pyro_vae.classifier import train_classifier
    from pyro_vae.data import load_dataset

    with simulated_cuda():
        data = load_dataset("digits", device="cuda")
        set_seed(5)
        before = torch.cuda.get_rng_state()
        clf = train_classifier(data, epochs=1, batch_size=1024)
        assert on_device(clf)
        assert torch.equal(torch.cuda.get_rng_state(), before)



CLI = ["train", "vae", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16",
       "--batch-size", "1024", "--epochs", "1", "--eval-samples", "50", "--no-progress"]


def test_cli_train_on_device(tmp_path, capsys):
    """tests/test_cli.py's ``test_train_on_cuda`` (marked ``cuda``), on the simulated device."""
    from pyro_vae.cli import main

    with simulated_cuda():
        code = main([*CLI, "--device", "cuda", "--out", str(tmp_path / "g")])
    capsys.readouterr()
    assert code == 0
    import json
    metrics = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")


def test_cli_device_ordinal_is_a_usage_error(tmp_path, capsys):
    from pyro_vae.cli import main

    with simulated_cuda():
        code = main([*CLI, "--device", "cuda:7", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cuda:7" in err
    assert not (tmp_path / "g").exists()


def test_cli_train_host_fed_on_device(tmp_path, capsys):
    """``--data-on host`` on the simulated device: training images on the CPU, each minibatch
    gathered there and copied over, every op checked against CUDA's device rules (pinning
    needs a driver, so the staging buffer is a plain one here)."""
    from pyro_vae import data as data_mod
    from pyro_vae.cli import main

    pins = []
    plain = {(data_mod, "_staging_buffer"):
             lambda shape, dtype, pin: pins.append(pin) or torch.empty(shape, dtype=dtype)}
    with simulated_cuda(patch=plain):
        code = main([*CLI, "--device", "cuda", "--data-on", "host", "--out", str(tmp_path / "g")])
    capsys.readouterr()
    assert code == 0 and pins == [True]  # 1,497 digits: one minibatch of 1,024, pinned
    import json
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["data"]["data_on"] == "host"


def test_ais_runs_on_device_without_per_step_host_reads():
    """AIS (pyro_vae.ais) on the device: its reads of device tensors do not grow with the
    number of temperatures (no per-step .item())."""
    from pyro_vae.ais import AISConfig, ais

    reads = {}
    with simulated_cuda() as mode:
        opened = build(config("vae"))
        x = opened.data.test_x[:6]
        for steps in (4, 12):
            n0 = len(mode.host_reads)
            result = ais(opened.model, x, config=AISConfig(steps=steps, chains=2))
            reads[steps] = len(mode.host_reads) - n0
            assert isinstance(result.log_px, DeviceTensor)
            assert np.isfinite(host(result.log_px).numpy()).all()
    assert reads[4] == reads[12], reads


@ENGINES
@pytest.mark.parametrize("key", list(VAE_VARIANTS))
def test_vae_priors_and_guides_train_evaluate_and_sample_on_device(tmp_path, engine, key):
    """The learned priors and the IAF guide (pyro_vae/models/priors.py): both engines, the
    final evaluation and the pictures (samples from the learned prior) on the device."""
    cfg = config("vae", settings={**SETTINGS["vae"], **VAE_VARIANTS[key]}, engine=engine)
    cfg = replace(cfg, eval=replace(cfg.eval, pictures=True))
    with simulated_cuda():
        result = run(cfg, tmp_path / "r", progress=False)
        assert result.metrics["device"].startswith("cuda") and on_device(result.run.model)
        assert np.isfinite(result.metrics["test_log_likelihood"])
        assert (tmp_path / "r" / "samples.png").is_file()


def test_adaptive_resampling_on_device_resumes_exactly(tmp_path):
    """--resample: each epoch's weights from the model's latent means on the device, drawn on
    the CPU generator; no device tensor mixes with a CPU one, and a resumed run repeats."""
    resampled = {"resample": "histogram", "resample_alpha": 0.05}
    with simulated_cuda():
        straight = run(config("dbvae", epochs=2, **resampled), tmp_path / "a", progress=False)
        run(config("dbvae", epochs=1, **resampled), tmp_path / "b", progress=False)
        resumed = resume(tmp_path / "b", epochs=2, progress=False)
        assert on_device(straight.run.model)
        assert "resample_rarest_share" in straight.training.history[-1]
        assert _same(_params(straight.run.model), _params(resumed.run.model))


def test_ssvae_on_real_vectors_trains_on_the_device():
    """M1+M2's setting: the ssvae with a Gaussian likelihood on (N, D) real data, a few labels
    (its steps read the device inside Pyro's enumeration, pyro/infer/util.py, as the pixel
    ssvae's do: not checked here)."""
    cfg = RunConfig.for_model("ssvae", dataset="gmm-2d", eval=EVAL, latent_dim=2, hidden=(16,),
                              num_classes=3, likelihood="gaussian",
                              data={"labels_per_class": 5},
                              train={"epochs": 1, "batch_size": 1024, "device": "cuda"})
    with simulated_cuda():
        opened, _ = _train(cfg)
        assert opened.data.shape == (2,) and opened.data.kind == "real"
