"""Probabilistic PCA (Tipping & Bishop 1999): a latent-variable model with a closed form.

Model::

    z_n ~ N(0, I_d)
    x_n | z_n ~ N(W z_n + b, sigma^2 I_D)

so that the marginal likelihood is exact, ``x_n ~ N(b, W W^T + sigma^2 I_D)``, and so is the
posterior, ``z_n | x_n ~ N(M^{-1} W^T (x_n - b) / sigma^2, M^{-1})`` with
``M = I_d + W^T W / sigma^2``.

Guide: ``q(z_n | x_n) = N(A x_n + c, L L^T)`` -- affine in x with one full covariance, so the
exact posterior lies inside the guide family: at the optimum the ELBO equals log p(x) and every
importance weight is the same. This is the model the estimators of log p(x) are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import DataError, check_positive
from pyro_vae.models.base import LatentModel


@dataclass
class LinearGaussianConfig:
    latent_dim: int = 2

    def __post_init__(self) -> None:
        check_positive("latent_dim", self.latent_dim)


class LinearGaussian(LatentModel):
    """Probabilistic PCA with an amortized full-covariance Gaussian guide."""

    name = "linear"
    config_class = LinearGaussianConfig
    data_kinds = ("real",)

    def __init__(self, config: LinearGaussianConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        if len(data_shape) != 1:
            raise DataError(f"the linear model takes vectors, got points of shape {data_shape}")
        D, d = data_shape[0], config.latent_dim
        self.W = nn.Parameter(0.1 * torch.randn(D, d))
        self.b = nn.Parameter(torch.zeros(D))
        self.raw_sigma = nn.Parameter(torch.zeros(()))
        self.A = nn.Parameter(torch.zeros(d, D))
        self.c = nn.Parameter(torch.zeros(d))
        self.raw_tril = nn.Parameter(torch.zeros(d, d))

    @property
    def sigma(self) -> torch.Tensor:
        return F.softplus(self.raw_sigma) + 1e-4

    @property
    def guide_tril(self) -> torch.Tensor:
        diag = F.softplus(self.raw_tril.diagonal()) + 1e-5
        return self.raw_tril.tril(-1) + torch.diag_embed(diag)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        plate = self.data_plate(x, num_data)
        loc = x.new_zeros(x.shape[0], self.config.latent_dim)
        with plate:
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.MultivariateNormal(x @ self.A.T + self.c,
                                                     scale_tril=self.guide_tril))

    # -- closed forms ---------------------------------------------------------------------
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_n) for each row of ``x``."""
        D = self.data_shape[0]
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(D, device=x.device)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (one row per data point) and covariance of p(z | x)."""
        s2 = self.sigma**2
        M = torch.eye(self.config.latent_dim, device=x.device) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(M)
        return (x - self.b) @ (cov @ self.W.T / s2).T, cov

    @torch.no_grad()
    def set_guide_to_posterior(self) -> None:
        """Put the guide at the exact posterior (then the ELBO equals log p(x))."""
        s2 = self.sigma**2
        M = torch.eye(self.config.latent_dim, device=self.W.device) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(M)
        A = cov @ self.W.T / s2
        L = torch.linalg.cholesky(cov)
        self.A.copy_(A)
        self.c.copy_(-A @ self.b)
        raw_diag = torch.log(torch.expm1(L.diagonal() - 1e-5))  # inverse softplus
        self.raw_tril.copy_(L.tril(-1) + torch.diag_embed(raw_diag))

    @torch.no_grad()
    def sample(self, num, y=None):
        z = torch.randn(num, self.config.latent_dim, device=self.device)
        return z @ self.W.T + self.b

    def encode(self, x, y=None):
        return x @ self.A.T + self.c, self.guide_tril.diagonal().expand(x.shape[0], -1)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.encode(x)[0] @ self.W.T + self.b


