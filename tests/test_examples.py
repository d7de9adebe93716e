"""Every example runs with tiny arguments; an example not listed here fails the suite. Every run
folder an example writes opens with ``pyro-vae evaluate`` and holds only declared metrics."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from pyro_vae.metrics import check_keys

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY_ARGS = {
    "vae.py": ["--dataset", "digits", "--epochs", "2", "--latent-dim", "4",
               "--eval-samples", "50"],
    "iwae_bounds.py": ["--epochs", "2", "--linear-epochs", "1", "--num-samples", "100",
                       "--points", "40"],
    "bernoulli_latent.py": ["--dataset", "digits", "--epochs", "1", "--latent-dim", "8",
                            "--num-particles", "2", "--eval-samples", "10",
                            "--estimators", "no-baseline,neural,vimco"],
    "gradient_variance.py": ["--dataset", "digits", "--train-epochs", "1", "--draws", "5",
                             "--warmup", "3", "--batch-size", "8"],
    "pathwise_vs_score.py": ["--steps", "10"],
    "likelihood_estimators.py": ["--gmm-epochs", "5", "--vae-epochs", "1", "--points", "10",
                                 "--ks", "1,10", "--replicates", "2"],
    "gmm.py": ["--epochs", "5", "--svi-steps", "5", "--nuts-points", "60", "--nuts-samples",
               "10", "--nuts-warmup", "10"],
    "beta_vae.py": ["--epochs", "1", "--latent-dim", "3", "--betas", "4",
                    "--kl-warmup-epochs", "1", "--eval-samples", "50"],
    "autoencoders.py": ["--dataset", "digits", "--epochs", "1", "--latent-dim", "3"],
    "pretraining.py": ["--dataset", "digits", "--epochs", "1", "--finetune-epochs", "1",
                       "--hidden", "16,8", "--latent-dim", "4", "--label-draws", "2"],
    "hierarchical.py": ["--dataset", "digits", "--epochs", "1", "--eval-samples", "50",
                        "--rows", "0,3"],
    "compare_runs.py": None,  # needs two run folders: test_compare_runs_example makes them
    "cvae.py": ["--dataset", "digits", "--epochs", "1", "--eval-samples", "20",
                "--num-generated", "50", "--classifier-epochs", "1"],
    "semi_supervised.py": ["--dataset", "digits", "--epochs", "1", "--hidden", "16",
                           "--latent-dim", "2", "--seeds", "0,1", "--labels-per-class", "3",
                           "--m1m2-hidden", "16", "--m1m2-latent-dim", "2"],
    "iwae_table.py": ["--dataset", "digits", "--epochs", "1", "--eval-samples", "10",
                      "--rows", "1L-k1,2L-iwae-k5", "--batch-size", "100"],
    "outliers.py": ["--epochs", "1", "--latent-dim", "3", "--hidden", "32", "--num-samples",
                    "10", "--points", "30"],
    "debias.py": ["--epochs", "1", "--latent-dim", "3", "--hidden", "32", "--draws", "1",
                  "--alphas", "0.1", "--classifier-epochs", "1", "--seeds", "0",
                  "--classifier-weights", "histogram:max:0.01"],
    "clustering.py": ["--dataset", "digits", "--epochs", "1", "--pretrain-epochs", "1",
                      "--latent-dim", "3", "--hidden", "16", "--num", "3"],
    "vqvae.py": ["--dataset", "digits", "--epochs", "1", "--prior-epochs", "1",
                 "--codebook-size", "8", "--code-dim", "4", "--num", "3"],
    "ais.py": ["--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--points", "20",
               "--num-samples", "100", "--ais-steps", "5", "--ais-chains", "2"],
    "priors.py": ["--dataset", "digits", "--epochs", "1", "--latent-dim", "2",
                  "--prior-components", "3", "--num-samples", "50", "--num", "3",
                  "--variants", "normal,vamp,iaf"],
}
TRAINS_NOTHING = {"pathwise_vs_score.py", "compare_runs.py"}  # every other example makes runs


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY_ARGS)


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_example_runs(name, tmp_path, monkeypatch):
    if TINY_ARGS[name] is None:
        pytest.skip("run by its own test")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = _load(name).main([*TINY_ARGS[name], "--out", str(out)])
    assert result
    assert any(out.glob("*.png"))
    folders = sorted(path.parent for path in out.rglob("config.json"))
    assert bool(folders) == (name not in TRAINS_NOTHING)
    for folder in folders:
        _opens_with_the_cli(folder)


def _opens_with_the_cli(folder: Path) -> None:
    """``pyro-vae evaluate`` reads a run folder, and its metrics.json keys are declared."""
    from pyro_vae.cli import main as cli

    check_keys(json.loads((folder / "metrics.json").read_text()))
    ks = json.loads((folder / "config.json").read_text())["eval"]["iwae_ks"]
    samples = math.lcm(10, *ks)  # EvalConfig: a multiple of every k of the run
    assert cli(["evaluate", str(folder), "--num-samples", str(samples), "--no-progress"]) == 0
    check_keys(json.loads((folder / "metrics.json").read_text()))


def test_iwae_bounds_example_orders_the_bounds(tmp_path):
    rows = _load("iwae_bounds.py").main(["--epochs", "2", "--num-samples", "100", "--points",
                                         "40", "--out", str(tmp_path)])
    for model in ("linear", "vae"):
        bounds = [r["bound"] for r in rows if r["model"] == model and isinstance(r["k"], int)]
        assert bounds == sorted(bounds)


def test_compare_runs_example(tmp_path):
    """A run against itself differs by exactly 0 per digit; two runs differ."""
    from pyro_vae import UserError
    from pyro_vae.cli import main as cli

    for seed in ("0", "1"):
        assert cli(["train", "vae", "--dataset", "digits", "--epochs", "1", "--latent-dim", "3",
                    "--seed", seed, "--eval-samples", "0", "--no-progress",
                    "--out", str(tmp_path / f"run{seed}")]) == 0
    compare = _load("compare_runs.py").main
    args = ["--eval-samples", "20", "--train-points", "30", "--out", str(tmp_path / "out")]
    same = compare([str(tmp_path / "run0"), str(tmp_path / "run0"), *args])
    assert same["difference"] == 0.0 and same["stderr"] == 0.0
    other = compare([str(tmp_path / "run0"), str(tmp_path / "run1"), *args])
    assert other["difference"] != 0.0 and other["stderr"] > 0.0
    assert (tmp_path / "out" / "paired.png").is_file()
    with pytest.raises(UserError, match="nowhere"):
        compare([str(tmp_path / "run0"), str(tmp_path / "nowhere"), *args])


@pytest.mark.parametrize("script", ["vae.py", "debias.py", "outliers.py"])
def test_an_unwritable_out_is_one_line_and_exit_2(script, tmp_path):
    """Every example ends through pyro_vae.cli.run_script, as pyro-vae's commands do: an --out
    under a file is one line naming the script, exit 2 (debias.py and outliers.py ended in a
    NotADirectoryError traceback)."""
    import os
    import subprocess

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(blocker / "sub"),
                           "--epochs", "1"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), done.stderr
    assert str(blocker) in lines[0]
