import csv
import json
import subprocess
import sys

import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.models import MODELS

TINY = ["--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--batch-size", "64",
        "--no-progress"]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", *TINY, "--epochs", "2", "--eval-samples", "100",
                 "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run_folder(run_dir):
    for name in ("config.json", "checkpoint.pt", "metrics.json", "history.csv", "samples.png",
                 "reconstructions.png", "curves.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_elbo", "test_iwae", "iwae_k", "test_log_likelihood",
                "test_log_likelihood_stderr", "ll_num_samples", "train_elbo", "active_units",
                "kl_per_dim", "epochs", "seconds", "device", "dataset", "model", "objective"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and len(metrics["kl_per_dim"]) == 3
    assert metrics["test_elbo"] <= metrics["test_iwae"] <= metrics["test_log_likelihood"]
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_config"]["latent_dim"] == 3 and config["train"]["epochs"] == 2


def test_evaluate_and_sample(run_dir, tmp_path, capsys):
    code, out, _ = _run(["evaluate", run_dir, "--num-samples", "50", "--no-progress"], capsys)
    assert code == 0 and "test log p(x) [50 samples]" in out
    assert json.loads((run_dir / "metrics.json").read_text())["ll_num_samples"] == 50
    png = tmp_path / "new" / "s.png"
    code, _, _ = _run(["sample", run_dir, "--num", "16", "--out", png], capsys)
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_extends_a_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(["train", "vae", *TINY, "--epochs", "1", "--eval-samples", "0", "--out", out],
                capsys)[0] == 0
    code, _, _ = _run(["train", "--resume", "--out", out, "--epochs", "2", "--eval-samples",
                       "0", "--no-progress"], capsys)
    assert code == 0
    assert len(list(csv.DictReader((out / "history.csv").open()))) == 2
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2


def _one_error_line(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyro-vae: error:")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("argv,fragment", [
    (["train", "nope"], "unknown model 'nope'"),
    (["train", "vae", "--objective", "nope"], "unknown objective 'nope'"),
    (["train", "vae", "--dataset", "nope"], "unknown data set 'nope'"),
    (["train", "vae", "--epochs", "0"], "epochs must be at least 1"),
    (["train", "vae", "--batch-size", "0"], "batch size must be at least 1"),
    (["train", "vae", "--num-particles", "0"], "num-particles must be at least 1"),
    (["train", "vae", "--lr", "-1"], "learning rate must be positive"),
    (["train", "vae", "--epochs", "x"], "invalid int value"),
    (["train", "vae", "--hidden", "4,a"], "expects ints separated by commas"),
    (["train", "vae", "--binarize", "none", "--dataset", "digits"], "not binary"),
    (["train", "linear", "--hidden", "4"], "model linear has no setting 'hidden'"),
    (["train", "vae", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "vae", "--eval-samples", "77", "--dataset", "digits"], "multiple"),
    (["train", "--resume"], "--resume needs --out"),
    (["check"], "the following arguments are required: model"),
    (["train", "vae", "--latent-dim", "x"], "--latent-dim expects a whole number"),
    (["train", "--latent-dim", "3", "vae", "--epochs", "x"], "invalid int value: 'x'"),
    (["sample", "nowhere", "--out", "x.png"], "nowhere is not a folder"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(argv, capsys)
    _one_error_line(code, err, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_not_a_run_and_missing_checkpoint(tmp_path, capsys):
    code, _, err = _run(["evaluate", tmp_path], capsys)
    _one_error_line(code, err, "is not a run folder")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model": "vae", "dataset": "digits", "train": {}}))
    code, _, err = _run(["evaluate", tmp_path], capsys)
    _one_error_line(code, err, "has no checkpoint.pt")


def test_corrupt_checkpoint_is_reported_and_left_alone(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in ("config.json", "checkpoint.pt"):
        (copy / f).write_bytes((run_dir / f).read_bytes())
    (copy / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = _run(["evaluate", copy], capsys)
    _one_error_line(code, err, "is corrupt or unreadable")
    config_before = (copy / "config.json").read_bytes()
    code, _, err = _run(["train", "--resume", "--out", copy, "--epochs", "5"], capsys)
    _one_error_line(code, err, "is corrupt or unreadable")
    assert (copy / "checkpoint.pt").read_bytes() == b"PK\x03\x04 truncated"
    assert (copy / "config.json").read_bytes() == config_before


def test_mismatched_checkpoint(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config["model_config"]["latent_dim"] = 5
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    code, _, err = _run(["sample", copy, "--out", tmp_path / "s.png"], capsys)
    _one_error_line(code, err, "does not match the model")


def test_existing_run_is_not_overwritten(run_dir, capsys):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, _, err = _run(["train", "vae", *TINY, "--out", run_dir], capsys)
    _one_error_line(code, err, "already holds a run", "--resume")
    assert before == {p.name: p.read_bytes() for p in run_dir.iterdir()}


def test_a_run_stopped_before_its_first_checkpoint_starts_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "vae"}))  # crashed in epoch 1
    code, _, err = _run(["train", "vae", *TINY, "--epochs", "1", "--eval-samples", "0",
                         "--out", out], capsys)
    assert code == 0, err
    assert (out / "checkpoint.pt").is_file()
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] > 0


def test_resume_refuses_changed_settings(run_dir, capsys):
    code, _, err = _run(["train", "--resume", "--out", run_dir, "--lr", "0.5"], capsys)
    _one_error_line(code, err, "--lr 0.5 differs")


def test_help_with_and_without_a_model(capsys):
    assert main(["check", "--help"]) == 0
    assert main(["train", "gmm", "--help"]) == 0
    out = capsys.readouterr().out
    assert "settings of model gmm" in out and "--num-components" in out


def test_console_script_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyro_vae.cli", "train", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"pyro-vae: error: unknown model 'nope'; choose one of {', '.join(MODELS)}")


@pytest.mark.cuda
def test_train_on_cuda(tmp_path, capsys):
    code, _, _ = _run(["train", "vae", *TINY, "--epochs", "1", "--eval-samples", "50",
                       "--device", "cuda", "--out", tmp_path / "gpu"], capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "gpu" / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and torch.cuda.is_available()


def test_sample_refuses_bad_numbers_and_paths(run_dir, tmp_path, capsys):
    code, _, err = _run(["sample", run_dir, "--num", "0", "--out", tmp_path / "s.png"], capsys)
    _one_error_line(code, err, "--num must be at least 1")
    code, _, err = _run(["sample", run_dir, "--out", tmp_path / "s.jpg"], capsys)
    _one_error_line(code, err, "must name a .png file")


def test_interrupt_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    from pyro_vae.engine import FastStepper

    out = tmp_path / "r"
    assert _run(["train", "vae", *TINY, "--epochs", "1", "--eval-samples", "0", "--out", out],
                capsys)[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    calls = {"n": 0}
    real_step = FastStepper.step

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:  # Ctrl-C in the middle of epoch 2 (23 steps an epoch)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(FastStepper, "step", step)
    code, _, err = _run(["train", "--resume", "--out", out, "--epochs", "3", "--eval-samples",
                         "0", "--no-progress"], capsys)
    assert code == 130 and "continues with train --resume" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_new_models_config_fields_become_flags(tmp_path, capsys, monkeypatch):
    from dataclasses import dataclass

    from pyro_vae.models import MODELS
    from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig

    @dataclass
    class NoisyConfig(LinearGaussianConfig):
        noise_floor: float = 1e-3
        widths: tuple[int, ...] = (4,)

    class Noisy(LinearGaussian):
        name = "noisy"
        config_class = NoisyConfig

    monkeypatch.setitem(MODELS, "noisy", Noisy)
    out = tmp_path / "n"
    code, _, _ = _run(["train", "noisy", "--dataset", "linear-gaussian", "--noise-floor", "0.05",
                       "--widths", "3,2", "--epochs", "1", "--eval-samples", "0",
                       "--no-progress", "--out", out], capsys)
    assert code == 0
    saved = json.loads((out / "config.json").read_text())["model_config"]
    assert saved == {"latent_dim": 2, "noise_floor": 0.05, "widths": [3, 2]}
    code, _, err = _run(["train", "vae", "--noise-floor", "0.1"], capsys)
    _one_error_line(code, err, "model vae has no setting 'noise_floor'")
