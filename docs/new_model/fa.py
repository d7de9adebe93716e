"""Factor analysis (Spearman 1904; Rubin & Thayer 1982) with an amortized Gaussian guide.

Model::

    z_n ~ N(0, I_d)
    x_n | z_n ~ N(W z_n + b, diag(psi))        psi > 0: one noise variance per dimension

Guide::

    q(z_n | x_n) = N(A x_n + c, diag(s^2))      affine in x, one diagonal scale
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae import LatentModel
from pyro_vae.errors import DataError, check_positive


@dataclass
class FactorAnalysisConfig:
    latent_dim: int = 2

    def __post_init__(self) -> None:
        check_positive("latent_dim", self.latent_dim)


class FactorAnalysis(LatentModel):
    """Factor analysis: a linear-Gaussian model with per-dimension noise."""

    name = "fa"
    config_class = FactorAnalysisConfig
    data_kinds = ("real",)

    def __init__(self, config: FactorAnalysisConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        if len(data_shape) != 1:
            raise DataError(f"factor analysis takes vectors, got points of shape {data_shape}")
        D, d = data_shape[0], config.latent_dim
        self.W = nn.Parameter(0.1 * torch.randn(D, d))     # loadings
        self.b = nn.Parameter(torch.zeros(D))
        self.raw_psi = nn.Parameter(torch.zeros(D))         # noise std = softplus(raw) + 1e-4
        self.A = nn.Parameter(torch.zeros(d, D))            # guide: q(z | x) = N(A x + c, s^2)
        self.c = nn.Parameter(torch.zeros(d))
        self.raw_s = nn.Parameter(torch.zeros(d))

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):                  # scales by num_data / len(x)
            loc = x.new_zeros(len(x), self.config.latent_dim)
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            noise = F.softplus(self.raw_psi) + 1e-4
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, noise).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        loc, scale = self.encode(x)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def encode(self, x, y=None):
        scale = F.softplus(self.raw_s) + 1e-4
        return x @ self.A.T + self.c, scale.expand(len(x), -1)

    @torch.no_grad()
    def sample(self, num, y=None):
        z = torch.randn(num, self.config.latent_dim, device=self.device)
        return z @ self.W.T + self.b

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.encode(x)[0] @ self.W.T + self.b
