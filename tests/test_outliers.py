"""Outlier scores: log p(x) by importance sampling ranks shifted points below the training
distribution, the CSV of ``pyro-vae score`` has one finite row per point, bad input is one line."""

import csv
import math

import numpy as np
import pytest
import torch

from pyro_vae.cli import main
from pyro_vae.data import linear_gaussian_parameters, load_dataset
from pyro_vae.models.linear import LinearGaussian, LinearGaussianConfig
from pyro_vae.outliers import COLUMNS, outlier_auc, score_points

SHIFT = 3.0  # per coordinate, in units of the data's noise scale and above


def _true_linear_model(data) -> LinearGaussian:
    """The generating probabilistic-PCA model with its guide moved off the exact posterior
    (so importance sampling has a Monte Carlo error to state)."""
    p = linear_gaussian_parameters()
    model = LinearGaussian(LinearGaussianConfig(latent_dim=p["W"].shape[1]), data.shape)
    with torch.no_grad():
        model.W.copy_(p["W"])
        model.b.copy_(p["b"])
        model.raw_sigma.copy_(torch.log(torch.expm1(torch.as_tensor(p["sigma"]) - 1e-4)))
        model.set_guide_to_posterior()
        model.c.add_(0.3)
        model.raw_tril.mul_(0.8)
    return model.eval()


def test_log_px_is_lower_outside_the_training_distribution():
    data = load_dataset("linear-gaussian")
    model = _true_linear_model(data)
    x_in = data.test_x[:200]
    x_out = x_in + SHIFT
    inl = score_points(model, x_in, num_samples=200)
    out = score_points(model, x_out, num_samples=200)
    for s, x in ((inl, x_in), (out, x_out)):
        exact = model.log_marginal(x).double()
        # the estimate agrees with the exact marginal within its stated MC error (a margin of
        # 5 standard errors a point, plus the O(var) downward bias of log-mean-exp)
        assert (s.log_px - exact).abs().le(5 * s.log_px_mc_stderr + 0.05).float().mean() > 0.97
        assert torch.all(s.elbo <= s.log_px + 1e-9)
    gap = inl.log_px.mean() - out.log_px.mean()
    # standard error of the gap: across points and Monte Carlo, both sets
    se = math.sqrt(sum(s.log_px.var().item() / len(s) + s.log_px_mc_stderr.pow(2).sum().item()
                       / len(s) ** 2 for s in (inl, out)))
    assert gap > 10 * se, (gap, se)
    assert outlier_auc(inl, out, "log_px") > 0.95
    assert outlier_auc(inl, inl, "log_px") == pytest.approx(0.5)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "linear"
    assert main(["train", "linear", "--dataset", "linear-gaussian", "--epochs", "3",
                 "--eval-samples", "50", "--no-progress", "--out", str(out)]) == 0
    return out


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_score_writes_one_finite_row_per_point(linear_run, tmp_path, capsys):
    data = load_dataset("linear-gaussian")
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, x=(data.test_x + SHIFT).numpy())
    for spec, name in (("linear-gaussian", "in.csv"), (str(shifted), "out.csv")):
        assert main(["score", str(linear_run), "--data", spec, "--num-samples", "100",
                     "--no-progress", "--out", str(tmp_path / name)]) == 0
    assert "points of linear-gaussian" in capsys.readouterr().out
    inl, out = _rows(tmp_path / "in.csv"), _rows(tmp_path / "out.csv")
    assert len(inl) == len(data.test_x)
    assert len(out) == len(load_dataset(str(shifted)).test_x)
    for rows in (inl, out):
        assert list(rows[0]) == list(COLUMNS)
        assert [int(r["index"]) for r in rows] == list(range(len(rows)))
        assert all(math.isfinite(float(r[c])) for r in rows for c in COLUMNS[1:])
    # the briefly trained run rates the shifted points lower, by more than 10 standard errors
    # of the difference of the means (across points and Monte Carlo, both sets)
    mean, var = {}, 0.0
    for key, rows in (("in", inl), ("out", out)):
        v = np.array([float(r["log_px"]) for r in rows])
        se = np.array([float(r["log_px_mc_stderr"]) for r in rows])
        mean[key] = v.mean()
        var += v.var(ddof=1) / len(v) + (se**2).sum() / len(v) ** 2
    assert mean["in"] - mean["out"] > 10 * math.sqrt(var), (mean, var)
    assert main(["score", str(linear_run), "--data", "linear-gaussian", "--split", "train",
                 "--num-samples", "10", "--no-progress", "--out", str(tmp_path / "t.csv")]) == 0
    assert len(_rows(tmp_path / "t.csv")) == data.num_train


@pytest.mark.parametrize("args, fragment", [
    (["--data", "digits"], "has points of shape (1, 8, 8)"),
    (["--data", "no-such-set"], "unknown data set 'no-such-set'"),
    (["--data", "linear-gaussian", "--out", "x.txt"], "must name a .csv file"),
    (["--data", "linear-gaussian", "--out", "sub.csv/x.csv"], "is a file, not a folder"),
    (["--data", "linear-gaussian", "--num-samples", "0"], "must be at least 1"),
    (["--data", "linear-gaussian", "--split", "val"], "invalid choice"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_input_is_one_line_and_exit_2(linear_run, args, fragment, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub.csv").write_text("")
    code = main(["score", str(linear_run), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "scores.csv").exists()


def test_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["score", str(tmp_path), "--data", "digits", "--out",
                 str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
