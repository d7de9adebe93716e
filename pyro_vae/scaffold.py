"""``pyro-vae new NAME``: a model file and its test, ready to edit, that pass the checks and
train (``tests/test_scaffold.py`` runs what it writes)."""

from __future__ import annotations

import keyword
from pathlib import Path

from pyro_vae.errors import ConfigError
from pyro_vae.runs import atomic_write, check_new_file

MODEL = '''"""{cls}: a variational autoencoder written as a pyro_vae model/guide pair.

    pyro-vae check {name}.py:{cls} --dataset digits
    pyro-vae train {name}.py:{cls} --dataset digits --epochs 20 --out runs/{name}
    pyro-vae evaluate runs/{name}

Model:  z_n ~ N(0, I),  x_n | z_n ~ Bernoulli(sigmoid(decoder(z_n)))
Guide:  q(z_n | x_n) = N(mu(x_n), diag(sigma(x_n)^2))

Edit freely; keep the rules of docs/new_model.md: both programs take (x, y=None, num_data=None),
every sample site sits in self.data_plate(x, num_data), vector latents are .to_event(1), and
a latent's value may carry extra leading (particle) dimensions: reshape with z.shape[:-1],
never len(x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae import LatentModel
from pyro_vae.errors import DataError


@dataclass
class {cls}Config:
    """Settings; each field is a flag: pyro-vae train {name}.py:{cls} --latent-dim 8"""

    latent_dim: int = 16
    hidden: int = 256


class {cls}(LatentModel):
    name = "{name}"
    config_class = {cls}Config

    def __init__(self, config: {cls}Config, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        d, h, k = math.prod(data_shape), config.hidden, config.latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, h), nn.ReLU())
        self.loc = nn.Linear(h, k)
        self.raw_scale = nn.Linear(h, k)
        self.decoder = nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, d))

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.config.latent_dim), 1.0)
            z = pyro.sample("z", prior.to_event(1))
            logits = self.decoder(z).reshape(*z.shape[:-1], *self.data_shape)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(len(self.data_shape)),
                        obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        loc, scale = self.encode(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x, y=None):
        h = self.encoder(x)
        return self.loc(h), F.softplus(self.raw_scale(h)) + 1e-4

    @torch.no_grad()
    def sample(self, num, y=None):
        z = torch.randn(num, self.config.latent_dim, device=self.device)
        return torch.sigmoid(self.decoder(z)).reshape(num, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return torch.sigmoid(self.decoder(self.encode(x)[0])).reshape(x.shape)

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        if not ((x == 0) | (x == 1)).all():
            raise DataError(f"{{what}} is not binary but the Bernoulli likelihood needs 0/1 "
                            "values: use --binarize dynamic or fixed")
'''

TEST = '''"""Tests of {cls} ({name}.py): the model/guide checks, and a short run that reopens."""

import math
from pathlib import Path

from pyro_vae import RunConfig, TrainConfig, build_model, load_dataset, open_run, run
from pyro_vae.testing import assert_model_guide

SPEC = f"{{Path(__file__).resolve().parent / '{name}.py'}}:{cls}"


def test_passes_the_model_guide_checks():
    data = load_dataset("digits")
    assert_model_guide(build_model(SPEC, data.shape), data.test_x[:8])


def test_trains_evaluates_and_reopens(tmp_path):
    config = RunConfig.for_model(SPEC, dataset="digits", latent_dim=4,
                                 train=TrainConfig(epochs=2, batch_size=64),
                                 eval={{"num_samples": 50, "iwae_ks": (5,)}})
    m = run(config, tmp_path / "run", progress=False).metrics
    assert m["test_elbo"] <= m["test_iwae"] <= m["test_log_likelihood"] < 0
    assert math.isfinite(m["train_elbo"])
    assert open_run(tmp_path / "run").model.config.latent_dim == 4
'''


def class_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or name


def write_model_files(name: str, folder: str | Path = ".") -> list[Path]:
    """Write ``NAME.py`` (a VAE pair) and ``test_NAME.py`` into ``folder``; never overwrite."""
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("test"):
        raise ConfigError(f"the model name {name!r} must be a Python identifier (letters, "
                          "digits, _), not a keyword, not starting with 'test'")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--dir {folder} is a file, not a folder")
    model, test = folder / f"{name}.py", folder / f"test_{name}.py"
    for path in (model, test):
        if path.exists():
            raise ConfigError(f"{path} already exists; choose another name or --dir")
    check_new_file(model, "--dir")  # not under a file, not in a folder that cannot be written
    cls = class_name(name)
    try:  # both files or neither
        atomic_write(model, MODEL.format(name=name, cls=cls).encode())
        atomic_write(test, TEST.format(name=name, cls=cls).encode())
    except BaseException:
        model.unlink(missing_ok=True)
        raise
    return [model, test]
