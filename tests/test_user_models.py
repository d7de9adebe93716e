"""A user's own model/guide pairs, kept outside the package, go through every command.

The pairs are written into a temporary folder as a user would write them: a VAE with a
Laplace prior, and a port of Pyro's tutorial VAE that registers its sub-modules under their own
names (``pyro.module("encoder", ...)``, ``pyro.module("decoder", ...)``).
"""

import json
import textwrap

import pytest

from pyro_vae import RunConfig, TrainConfig, resume, run
from pyro_vae.cli import main
from pyro_vae.data import load_dataset
from pyro_vae.models import build_model
from pyro_vae.runner import open_run
from pyro_vae.runs import RunFolder
from pyro_vae.testing import assert_same_parameters, check_model_guide
from pyro_vae.train import train

PAIRS = textwrap.dedent('''
    """A user's pairs, outside pyro_vae."""
    import math
    from dataclasses import dataclass

    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn
    from torch.nn import functional as F

    from pyro_vae import LatentModel


    @dataclass
    class LaplaceConfig:
        latent_dim: int = 3
        hidden: int = 16          # an int here, a tuple in the built-in VAE


    class LaplaceVAE(LatentModel):
        """z ~ Laplace(0, 1) per dimension; q(z|x) Gaussian."""

        name = "laplace_vae"
        config_class = LaplaceConfig

        def __init__(self, config, data_shape):
            super().__init__(config, data_shape)
            d = math.prod(data_shape)
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(d, config.hidden), nn.Tanh(),
                                     nn.Linear(config.hidden, 2 * config.latent_dim))
            self.dec = nn.Sequential(nn.Linear(config.latent_dim, config.hidden), nn.Tanh(),
                                     nn.Linear(config.hidden, d))

        def model(self, x, y=None, num_data=None):
            pyro.module(self.name, self)
            with self.data_plate(x, num_data):
                loc = x.new_zeros(x.shape[0], self.config.latent_dim)
                z = pyro.sample("z", dist.Laplace(loc, 1.0).to_event(1))
                logits = self.dec(z).reshape(*z.shape[:-1], *self.data_shape)
                pyro.sample("x", dist.Bernoulli(logits=logits).to_event(3), obs=x)

        def guide(self, x, y=None, num_data=None):
            pyro.module(self.name, self)
            loc, scale = self.encode(x)
            with self.data_plate(x, num_data):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

        def encode(self, x, y=None):
            loc, raw = self.enc(x).chunk(2, -1)
            return loc, F.softplus(raw) + 1e-3

        @torch.no_grad()
        def sample(self, num, y=None):
            z = dist.Laplace(torch.zeros(num, self.config.latent_dim), 1.0).sample()
            return torch.sigmoid(self.dec(z.to(self.device))).reshape(num, *self.data_shape)

        @torch.no_grad()
        def reconstruct(self, x, y=None):
            return torch.sigmoid(self.dec(self.encode(x)[0])).reshape(x.shape)


    class Encoder(nn.Module):  # Pyro's tutorial VAE, ported with the minimal changes
        def __init__(self, d, z_dim, hidden_dim):
            super().__init__()
            self.fc1 = nn.Linear(d, hidden_dim)
            self.fc21 = nn.Linear(hidden_dim, z_dim)
            self.fc22 = nn.Linear(hidden_dim, z_dim)

        def forward(self, x):
            hidden = F.softplus(self.fc1(x.reshape(x.shape[0], -1)))
            return self.fc21(hidden), torch.exp(self.fc22(hidden))


    class Decoder(nn.Module):
        def __init__(self, d, z_dim, hidden_dim):
            super().__init__()
            self.fc1 = nn.Linear(z_dim, hidden_dim)
            self.fc21 = nn.Linear(hidden_dim, d)

        def forward(self, z):
            return torch.sigmoid(self.fc21(F.softplus(self.fc1(z))))


    @dataclass
    class TutorialConfig:
        z_dim: int = 3
        hidden_dim: int = 16
        both_names: bool = False   # also pyro.module(self.name, self)


    class TutorialVAE(LatentModel):
        name = "tutorial_vae"
        config_class = TutorialConfig
        observed_site = "obs"
        latent_sites = ("latent",)

        def __init__(self, config, data_shape):
            super().__init__(config, data_shape)
            d = math.prod(data_shape)
            self.encoder = Encoder(d, config.z_dim, config.hidden_dim)
            self.decoder = Decoder(d, config.z_dim, config.hidden_dim)

        def model(self, x, y=None, num_data=None):
            if self.config.both_names:
                pyro.module(self.name, self)
            pyro.module("decoder", self.decoder)
            with self.data_plate(x, num_data):
                z_loc = x.new_zeros(x.shape[0], self.config.z_dim)
                z = pyro.sample("latent", dist.Normal(z_loc, 1.0).to_event(1))
                img = self.decoder(z).reshape(*z.shape[:-1], *self.data_shape)
                pyro.sample("obs", dist.Bernoulli(img, validate_args=False).to_event(3), obs=x)

        def guide(self, x, y=None, num_data=None):
            if self.config.both_names:
                pyro.module(self.name, self)
            pyro.module("encoder", self.encoder)
            with self.data_plate(x, num_data):
                z_loc, z_scale = self.encoder(x)
                pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

        def encode(self, x, y=None):
            return self.encoder(x)

        @torch.no_grad()
        def sample(self, num, y=None):
            z = torch.randn(num, self.config.z_dim, device=self.device)
            return self.decoder(z).reshape(num, *self.data_shape)

        @torch.no_grad()
        def reconstruct(self, x, y=None):
            return self.decoder(self.encoder(x)[0]).reshape(x.shape)
''')

TINY = ["--dataset", "digits", "--batch-size", "64", "--no-progress"]


@pytest.fixture
def zoo(tmp_path):
    folder = tmp_path / "my_zoo"
    folder.mkdir()
    (folder / "pairs.py").write_text(PAIRS)
    return folder


def _ok(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_every_command_takes_a_pair_from_a_file(zoo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the spec is relative to where the command runs
    spec = "my_zoo/pairs.py:LaplaceVAE"
    out = _ok(["check", spec, "--dataset", "digits"], capsys)
    assert "every model/guide check passes" in out
    run_dir = tmp_path / "runs" / "laplace"
    _ok(["train", spec, *TINY, "--hidden", "8", "--epochs", "1", "--eval-samples", "50",
         "--out", run_dir], capsys)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_config"] == {"latent_dim": 3, "hidden": 8}  # an int, its own type
    assert config["model_source"]["kind"] == "file"
    out = _ok(["train", spec, "--resume", "--out", run_dir, "--epochs", "2", *TINY,
               "--hidden", "8"], capsys)  # the same settings restated
    assert "epochs                           2" in out
    monkeypatch.chdir(zoo)  # later commands reopen the file from the folder's record
    out = _ok(["evaluate", run_dir, "--num-samples", "50", "--no-progress"], capsys)
    assert "test log p(x) [50 samples]" in out
    assert _ok(["sample", run_dir, "--num", "4", "--out", tmp_path / "s.png"], capsys)
    assert _ok(["plot", run_dir, "--kind", "traversal", "--out", tmp_path / "t.png"], capsys)
    out = _ok(["diagnose", run_dir, "--points", "5", "--draws", "100", "--nuts-samples", "20",
               "--nuts-warmup", "20", "--chains", "1"], capsys)
    assert "k-hat over 5 points" in out
    for name in ("s.png", "t.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_a_moved_model_file_is_one_line(zoo, tmp_path, capsys):
    run_dir = tmp_path / "r"
    _ok(["train", f"{zoo / 'pairs.py'}:LaplaceVAE", *TINY, "--epochs", "1", "--eval-samples",
         "0", "--out", run_dir], capsys)
    (zoo / "pairs.py").rename(zoo / "elsewhere.py")
    code = main(["evaluate", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pairs.py no longer exists" in err[0]


def test_module_path_and_entry_point(zoo, tmp_path, capsys, monkeypatch):
    """``my_zoo.pairs:LaplaceVAE`` imports from the path; an installed entry point adds a
    name to ``pyro-vae list`` and to ``train``."""
    (zoo / "__init__.py").write_text("")
    dist_info = tmp_path / "my_zoo-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-zoo\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[pyro_vae.models]\nlaplace = my_zoo.pairs:LaplaceVAE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "laplace" in _ok(["list"], capsys).splitlines()[0]
    for spec, out in (("my_zoo.pairs:LaplaceVAE", tmp_path / "by-module"),
                      ("laplace", tmp_path / "by-entry-point")):
        _ok(["train", spec, *TINY, "--epochs", "1", "--eval-samples", "50", "--out", out],
            capsys)
        _ok(["evaluate", out, "--num-samples", "50", "--no-progress"], capsys)
    kinds = [json.loads((tmp_path / d / "config.json").read_text())["model_source"]["kind"]
             for d in ("by-module", "by-entry-point")]
    assert kinds == ["module", "entry-point"]


@pytest.mark.parametrize("engine", ["fast", "svi"])
@pytest.mark.parametrize("both_names", [False, True], ids=["own-names", "both-names"])
def test_a_tutorial_style_pair_resumes_exactly(zoo, tmp_path, engine, both_names):
    """Sub-modules registered under their own names: a run resumed after 1 of 3 epochs ends
    with the same parameters as the uninterrupted one, and the checkpoint keeps no copy of
    the module's weights in its param-store part."""
    spec = f"{zoo / 'pairs.py'}:TutorialVAE"
    config = RunConfig.for_model(spec, dataset="digits", both_names=both_names,
                                 train=TrainConfig(epochs=3, batch_size=256, engine=engine),
                                 eval={"num_samples": 0, "pictures": False})
    straight = run(config, tmp_path / "a", progress=False)
    interrupted = config.with_changes(train=TrainConfig(epochs=1, batch_size=256,
                                                        engine=engine))
    run(interrupted, tmp_path / "b", progress=False)
    assert RunFolder(tmp_path / "b").load_checkpoint()["param_store"]["params"] == {}
    before = {k: v.clone() for k, v in open_run(tmp_path / "b").model.state_dict().items()}
    resumed = resume(tmp_path / "b", epochs=3, progress=False)
    moved = max((v - before[k]).abs().max().item()
                for k, v in resumed.run.model.state_dict().items())
    assert moved > 0
    assert_same_parameters(straight.run.model, resumed.run.model)


def test_the_tutorial_pair_passes_the_check_and_trains_from_python(zoo, tmp_path):
    data = load_dataset("digits")
    model = build_model(f"{zoo / 'pairs.py'}:TutorialVAE", data.shape)
    assert check_model_guide(model, data.test_x[:8]) == []
    result = train(model, data, TrainConfig(epochs=1, batch_size=256), progress=False)
    assert result.history[0]["test_elbo"] < 0


def test_bayesian_gmm_trains_and_resumes_from_the_cli(tmp_path, capsys):
    out = tmp_path / "g"
    settings = ["--dataset", "gmm-2d", "--priors", "true", "--covariance", "diag",
                "--batch-size", "1500", "--no-progress", "--out", out]
    _ok(["train", "gmm", *settings, "--epochs", "2"], capsys)
    _ok(["train", "gmm", *settings, "--epochs", "3", "--resume"], capsys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["test_elbo"] < 0
    assert "global" in metrics["evaluation_skipped"]["bounds"]
    code = main(["train", "gmm", *map(str, settings), "--epochs", "4", "--resume",
                 "--num-components", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--num-components 4 differs from the run's 3" in err[0]


@pytest.mark.cuda
def test_a_run_resumes_on_cuda(zoo, tmp_path, capsys):
    """Checkpoints load on the CPU (RNG states stay CPU ByteTensors), weights go to the GPU."""
    spec = f"{zoo / 'pairs.py'}:TutorialVAE"
    argv = ["train", spec, *TINY, "--device", "cuda", "--eval-samples", "50",
            "--out", tmp_path / "gpu"]
    _ok([*argv, "--epochs", "1"], capsys)
    _ok([*argv, "--epochs", "2", "--resume"], capsys)
    metrics = json.loads((tmp_path / "gpu" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["device"].startswith("cuda")


def test_a_plain_module_and_an_error_in_user_code_are_one_line(zoo):
    """What `train`/`evaluate` say about a tutorial class that is not a LatentModel, and about
    an exception inside a user's model during evaluation."""
    from pyro_vae import TrainConfig as Config
    from pyro_vae.errors import ConfigError, ModelCodeError
    from pyro_vae.evaluate import evaluate
    from pyro_vae.models.registry import _load_file

    module = _load_file(zoo / "pairs.py")
    data = load_dataset("digits")
    with pytest.raises(ConfigError, match=r"train needs a pyro_vae.LatentModel; Encoder \("):
        train(module.Encoder(64, 3, 8), data, Config(epochs=1))
    broken = (zoo / "pairs.py").read_text().replace(
        "reshape(*z.shape[:-1], *self.data_shape)", "reshape(x.shape[0], *self.data_shape)")
    (zoo / "broken.py").write_text(broken)
    model = _load_file(zoo / "broken.py").LaplaceVAE(module.LaplaceConfig(), data.shape)
    with pytest.raises(ModelCodeError, match=r"broken.py:\d+ \(in model\) during evaluation; "
                       r"evaluation and multi-sample objectives run the programs vectorized"):
        evaluate(model, data.test_x[:4], num_samples=10, iwae_ks=(5,))
