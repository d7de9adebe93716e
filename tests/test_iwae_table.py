"""examples/iwae_table.py and benchmarks/quality.py at test size (digits, one epoch)."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from pyro_vae import RunFolder, data
from pyro_vae.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "10", "--no-progress"]


def _load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return _load("examples/iwae_table.py")


def test_the_papers_rows(table):
    assert table.FULL_EPOCHS == sum(3**i for i in range(8))
    assert len(table.ROWS) == 10
    # the four figures ../shared/design.md lists
    assert {i: table.ROWS[i][3] for i in ("1L-k1", "1L-iwae-k5", "1L-iwae-k50", "2L-iwae-k50")
            } == {"1L-k1": 86.76, "1L-iwae-k5": 85.54, "1L-iwae-k50": 84.78, "2L-iwae-k50": 82.90}
    assert table.ROWS["2L-vae-k50"][1:3] == ("trace", 50)
    assert table.label("1L-k1") == "1 layer, k=1, VAE = IWAE"
    assert table.caveats("mnist", table.FULL_EPOCHS, 5000, 20) == []
    assert "not comparable" in table.caveats("mnist-5k", table.FULL_EPOCHS, 5000, 20)[0]


def test_iwae_table_rows_files_and_run_folders(table, tmp_path):
    rows = table.main([*TINY, "--rows", "1L-k1,2L-iwae-k5", "--out", str(tmp_path)])
    assert [(r["id"], r["objective"], r["k"]) for r in rows] == [("1L-k1", "trace", 1),
                                                                 ("2L-iwae-k5", "iwae", 5)]
    for r in rows:
        assert r["nll"] > 0 and r["difference"] == pytest.approx(r["nll"] - r["paper_nll"])
    assert rows[1]["active_units"].count("+") == 1  # one count per stochastic layer
    assert "not comparable" in (tmp_path / "table.md").read_text()
    with (tmp_path / "table.csv").open() as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["1L-k1", "2L-iwae-k5"]
    train = RunFolder(tmp_path / "2L-iwae-k5").read_config()["train"]
    assert (train["batch_size"], train["adam_eps"], train["lr_schedule"]) == (20, 1e-4, "iwae")


def test_iwae_table_refuses_a_finished_row_unless_resumed(table, tmp_path):
    argv = [*TINY, "--rows", "1L-k1", "--out", str(tmp_path)]
    first = table.main(argv)
    with pytest.raises(ConfigError, match="--resume"):
        table.main(argv)
    again = table.main([*argv, "--resume"])  # nothing left to train: evaluated again
    assert again[0]["epochs"] == 1
    assert again[0]["nll"] == pytest.approx(first[0]["nll"])


@pytest.mark.parametrize("argv, error", [
    (["--epochs", "0"], ConfigError),
    (["--eval-samples", "0"], ConfigError),
    (["--lr-schedule", "cosine"], ConfigError),
    (["--rows", "3L-k1"], SystemExit),
    (["--dataset", "omniglot"], SystemExit),
], ids=["epochs", "eval-samples", "schedule", "rows", "dataset"])
def test_iwae_table_bad_input_fails_before_training(table, tmp_path, argv, error):
    with pytest.raises(error):
        table.main(["--dataset", "digits", *argv, "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_iwae_table_offline_mnist_is_one_data_error(table, tmp_path, monkeypatch):
    def offline():
        raise DataError("could not get MNIST (offline)")

    monkeypatch.setitem(data.DATASETS, "mnist", data.DataSpec(offline, "image"))  # no download
    with pytest.raises(DataError, match="MNIST"):
        table.main(["--rows", "1L-k1", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_quality_benchmark_at_test_size(tmp_path, capsys):
    quality = _load("benchmarks/quality.py")
    rows = quality.main(["--dataset", "digits", "--epochs", "1", "--cvae-epochs", "1",
                         "--eval-samples", "10", "--iwae-rows", "1L-k1", "--out",
                         str(tmp_path)])
    assert [r["published"] for r in rows] == [86.76, 71.8, 51.0, 24.2]
    assert all(r["ours"] > 0 for r in rows)
    assert "NOT comparable" in capsys.readouterr().out
    assert "NOT the papers' setting" in quality.render(rows, "mnist-5k")
