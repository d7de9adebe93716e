"""``pyro-vae new NAME`` writes a model file and its test; both work as written."""

import subprocess
import sys

from pyro_vae.cli import main


def test_new_writes_a_pair_that_checks_trains_and_whose_test_passes(tmp_path, capsys):
    assert main(["new", "my_vae", "--dir", str(tmp_path / "zoo")]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["my_vae.py", "test_my_vae.py"]
    spec = f"{tmp_path / 'zoo' / 'my_vae.py'}:MyVae"
    assert main(["check", spec, "--dataset", "digits"]) == 0
    assert "every model/guide check passes" in capsys.readouterr().out
    assert main(["train", spec, "--dataset", "digits", "--epochs", "1", "--eval-samples", "50",
                 "--latent-dim", "4", "--no-progress", "--out", str(tmp_path / "run")]) == 0
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "zoo" / "test_my_vae.py")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "2 passed" in proc.stdout


def test_new_refuses_bad_names_and_never_overwrites(tmp_path, capsys):
    assert main(["new", "my-vae", "--dir", str(tmp_path)]) == 2
    assert "must be a Python identifier" in capsys.readouterr().err
    assert main(["new", "vae2", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "vae2.py").read_text()
    assert main(["new", "vae2", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "vae2.py").read_text() == before


def test_check_lists_every_problem_and_exits_1(tmp_path, capsys):
    assert main(["new", "broken", "--dir", str(tmp_path)]) == 0
    path = tmp_path / "broken.py"
    text = path.read_text().replace("dist.Normal(loc, scale).to_event(1)",
                                    "dist.Normal(loc, scale)")
    path.write_text(text.replace("reshape(*z.shape[:-1], *self.data_shape)",
                                 "reshape(len(x), *self.data_shape)"))
    capsys.readouterr()
    assert main(["check", f"{path}:Broken", "--dataset", "digits"]) == 1
    out = capsys.readouterr().out
    assert "problem(s) on 8 points of digits" in out and ".to_event(1)" in out
