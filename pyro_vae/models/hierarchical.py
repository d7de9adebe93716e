r"""Hierarchical VAE: L >= 2 stochastic layers ``z1`` (next to x) ... ``zL`` (top).

Model (both parameterizations)::

    z_L ~ N(0, I)
    z_l | z_{l+1} ~ N(mu_l(z_{l+1}), diag sigma_l(z_{l+1})^2)      l = L-1, ..., 1
    x | z_1 ~ Bernoulli(sigmoid(f(z_1)))      (or --likelihood gaussian / logistic, as vae)

Guide, ``parameterization="iwae"`` (Burda et al. 2016, section 5; bottom-up)::

    q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}),   each a diagonal Gaussian of an MLP

With the defaults this is the IWAE paper's two-layer network: 784-[200-200 tanh]-100 latent
-[100-100 tanh]-50 latent, the decoder symmetric.

Guide, ``parameterization="residual"`` (NVAE, Vahdat & Kautz 2020, eq. 2; top-down)::

    d_1 = g_1(x), d_l = g_l(d_{l-1})                    deterministic bottom-up features
    q(z_L | x) = N(dmu_L, dsigma_L^2)                     (the prior of z_L is N(0, I))
    q(z_l | z_{l+1}, x) = N(mu_l(z_{l+1}) + dmu_l, (sigma_l(z_{l+1}) * dsigma_l)^2)
    (dmu_l, dsigma_l) = r_l(d_l, z_{l+1})

The guide shares the prior's top-down networks ``mu_l, sigma_l`` and only learns the relative
shift and scale, so per layer the KL has the closed form

.. math::

    \mathrm{KL}(q \,\|\, p) = \tfrac12 \sum_i \Big(\frac{\Delta\mu_i^2}{\sigma_i^2}
        + \Delta\sigma_i^2 - 1 - \log \Delta\sigma_i^2\Big),

which ``TraceMeanField_ELBO`` (objective ``meanfield``) uses: the guide samples the sites in the
model's order (top first), so Pyro's analytic Normal-Normal KL applies layer by layer given the
sampled ``z_{l+1}``. With the bottom-up ``iwae`` guide, ``meanfield`` is not exact (``z_2``
depends on ``z_1`` in q) and Pyro warns; use ``trace`` or ``iwae`` there.

beta, KL warm-up and free bits act on the sites ``z1 .. zL`` from the training loop
(:mod:`pyro_vae.annealing`).
``encode(x)`` returns the guide's means and scales of all layers, concatenated ``z1 .. zL``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, check_choice, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.models.likelihoods import LIKELIHOODS, PixelLikelihood, decoder_outputs
from pyro_vae.nn import (
    ACTIVATIONS,
    ARCHS,
    INITS,
    MLP,
    GaussianHead,
    activation,
    decoder_net,
    encoder_net,
    glorot_init_,
)

PARAMETERIZATIONS = ("iwae", "residual")
# Burda et al. (2016)'s networks by number of stochastic layers: (registered model, settings),
# with the initialisation of the paper's code. examples/hierarchical.py and iwae_table.py.
IWAE_PAPER_NETWORKS = {
    1: ("vae", {"latent_dim": 50, "hidden": (200, 200), "activation": "tanh", "init": "iwae"}),
    2: ("hvae", {"latent_dims": (100, 50), "hidden": (200, 100), "activation": "tanh",
                 "parameterization": "iwae", "init": "iwae"}),
}
_SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(_SOFTPLUS_ONE) == 1


@dataclass
class HVAEConfig:
    latent_dims: tuple[int, ...] = (100, 50)  # z1 (next to x), ..., zL (top)
    hidden: tuple[int, ...] = (200, 100)  # width of the two hidden layers below each z_l
    activation: str = "tanh"
    parameterization: str = "iwae"
    arch: str = "mlp"
    init: str = "iwae"  # Glorot weights, zero biases, output bias at the data (see nn.py)
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        self.latent_dims, self.hidden = tuple(self.latent_dims), tuple(self.hidden)
        if len(self.latent_dims) < 2:
            raise ConfigError(f"hvae needs at least 2 stochastic layers (--latent-dims 100,50), "
                              f"got {len(self.latent_dims)}; for one layer use the vae model")
        if len(self.hidden) != len(self.latent_dims):
            raise ConfigError(f"--hidden gives one width per stochastic layer: "
                              f"{len(self.latent_dims)} for --latent-dims "
                              f"{','.join(map(str, self.latent_dims))}, got {len(self.hidden)}")
        for d in (*self.latent_dims, *self.hidden):
            check_positive("layer size", d)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("init", self.init, INITS)
        check_choice("likelihood", self.likelihood, LIKELIHOODS)


class _Gaussian(nn.Module):
    """A vector -> (loc, scale) through an MLP with two hidden layers of ``width``."""

    def __init__(self, in_dim: int, width: int, out_dim: int, act: str):
        super().__init__()
        self.out_dim = out_dim
        self.net = MLP(in_dim, (width, width), 2 * out_dim, act)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net(h).split(self.out_dim, dim=-1)
        return loc, F.softplus(raw + _SOFTPLUS_ONE) + 1e-4  # scale 1 at raw = 0


class HierarchicalVAE(PixelLikelihood, LatentModel):
    """L Gaussian stochastic layers, Bernoulli pixels; bottom-up or residual top-down guide."""

    name = "hvae"
    config_class = HVAEConfig
    latent_sites = ("z1", "z2")  # per instance: one site per layer, see __init__
    data_kinds = ("image",)

    def __init__(self, config: HVAEConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        c = config
        dims, widths, act = c.latent_dims, c.hidden, c.activation
        L = len(dims)
        self.latent_sites = tuple(f"z{i + 1}" for i in range(L))
        # p(z_l | z_{l+1}) for l = 1 .. L-1 (index l-1), mirror widths of the guide
        self.prior_nets = nn.ModuleList(
            _Gaussian(dims[i + 1], widths[i + 1], dims[i], act) for i in range(L - 1))
        self.decoder = decoder_net(c.arch, dims[0], (widths[0], widths[0]),
                                   decoder_outputs(c.likelihood, data_shape), act)
        for name, param in self.likelihood.parameters(self.data_shape).items():
            setattr(self, name, param)
        if c.parameterization == "iwae":
            self.q_bottom = GaussianHead(c.arch, data_shape, (widths[0], widths[0]), dims[0], act)
            self.q_nets = nn.ModuleList(
                _Gaussian(dims[i - 1], widths[i], dims[i], act) for i in range(1, L))
        else:
            self.features = nn.ModuleList(
                [nn.Sequential(encoder_net(c.arch, data_shape, (widths[0],), widths[0], act),
                               activation(act))]
                + [nn.Sequential(MLP(widths[i - 1], (widths[i],), widths[i], act),
                                 activation(act)) for i in range(1, L)])
            # r_l(d_l, z_{l+1}) -> (dmu_l, raw dsigma_l); the top layer sees d_L only
            self.residual_nets = nn.ModuleList(
                MLP(widths[i] + (dims[i + 1] if i < L - 1 else 0), (widths[i],), 2 * dims[i], act)
                for i in range(L))
        if c.init == "iwae":
            glorot_init_(self)

    def init_from_data(self, x: torch.Tensor) -> None:
        """With ``init="iwae"`` and Bernoulli pixels, start the decoder at the training data's
        mean pixel (called by :func:`pyro_vae.train.train` before the first step)."""
        if self.config.init == "iwae":
            self.likelihood.init_output(self.decoder, x)

    # -- the two programs ----------------------------------------------------------------------
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        dims = self.config.latent_dims
        with self.data_plate(x, num_data):
            loc = x.new_zeros(x.shape[0], dims[-1])
            z = pyro.sample(self.latent_sites[-1], dist.Normal(loc, 1.0).to_event(1))
            for i in reversed(range(len(dims) - 1)):
                loc, scale = self.prior_nets[i](z)
                z = pyro.sample(self.latent_sites[i], dist.Normal(loc, scale).to_event(1))
            px = self.likelihood.dist(self.decoder(z), self)
            pyro.sample("x", px.to_event(len(self.data_shape)), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            for _ in self._guide_layers(x, sample=True):  # samples z_l as it goes
                pass

    def _guide_layers(self, x: torch.Tensor, sample: bool):
        """Yield ``(site, (loc, scale))`` in the guide's order; with ``sample=False`` the
        next layer is fed the mean instead of a draw (for ``encode``/``reconstruct``)."""

        def draw(name, loc, scale):
            if sample:
                return pyro.sample(name, dist.Normal(loc, scale).to_event(1))
            return loc

        if self.config.parameterization == "iwae":
            loc, scale = self.q_bottom(x)
            z = draw(self.latent_sites[0], loc, scale)
            yield self.latent_sites[0], (loc, scale)
            for i, net in enumerate(self.q_nets, start=1):
                loc, scale = net(z)
                z = draw(self.latent_sites[i], loc, scale)
                yield self.latent_sites[i], (loc, scale)
            return
        feats = [self.features[0](x)]
        for f in self.features[1:]:
            feats.append(f(feats[-1]))
        L = len(feats)
        z = None
        for i in reversed(range(L)):
            h = feats[i] if z is None else torch.cat([feats[i].expand(*z.shape[:-1], -1), z], -1)
            dmu, raw = self.residual_nets[i](h).split(self.config.latent_dims[i], dim=-1)
            dsigma = F.softplus(raw + _SOFTPLUS_ONE) + 1e-4
            if z is None:  # top layer: the prior is N(0, I)
                loc, scale = dmu, dsigma
            else:
                mu_p, sigma_p = self.prior_nets[i](z)
                loc, scale = mu_p + dmu, sigma_p * dsigma
            z = draw(self.latent_sites[i], loc, scale)
            yield self.latent_sites[i], (loc, scale)

    # -- pictures -----------------------------------------------------------------------------
    def encode(self, x, y=None):
        layers = dict(self._guide_layers(x, sample=False))
        locs = [layers[s][0] for s in self.latent_sites]
        scales = [layers[s][1] for s in self.latent_sites]
        return torch.cat(locs, -1), torch.cat(scales, -1)

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z1), self)

    @torch.no_grad()
    def sample(self, num, y=None):
        z = torch.randn(num, self.config.latent_dims[-1], device=self.device)
        for i in reversed(range(len(self.config.latent_dims) - 1)):
            loc, scale = self.prior_nets[i](z)
            z = loc + scale * torch.randn_like(loc)
        return self.decode(z)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        layers = dict(self._guide_layers(x, sample=False))
        return self.decode(layers[self.latent_sites[0]][0])

    def check_data(self, x, what="data"):
        super().check_data(x, what)
        self.likelihood.check(x, what)
