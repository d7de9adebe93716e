r"""Learned priors p(z) and flow posteriors q(z | x) for the Gaussian VAE: two registries.

``PRIORS`` (``pyro-vae train vae --prior NAME``), each a module whose :meth:`dist` is the
distribution of the ``z`` site in the model (event shape ``(d,)``)::

    normal   p(z) = N(0, I)
    mog      p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2)       K = --prior-components, learned
    vamp     p(z) = (1/K) sum_k q(z | u_k)                      K learned pseudo-inputs u_k in
                                                                 data space, through the same
                                                                 encoder (Tomczak & Welling 2018)
    flow     p(z) = N(f^{-1}(z); 0, I) |det d f^{-1} / dz|      f: --flow-steps masked
                                                                 autoregressive steps (MAF)

``POSTERIORS`` (``--posterior NAME``), each a module that says how many outputs the encoder
gives and turns them into the distribution of the guide's ``z`` site::

    diag     q(z | x) = N(mu(x), diag s(x)^2)
    iaf      z_0 ~ N(mu(x), diag s(x)^2),  z_t = m_t(z_{t-1}, h) + s_t(z_{t-1}, h) * z_{t-1}
             (--iaf-steps steps; m_t, s_t autoregressive in z_{t-1}, h a context the encoder
             gives beside mu and s: Kingma et al. 2016), so
             log q(z_T | x) = log N(z_0; mu, s^2) - sum_t sum_i log s_{t,i}

Both flows are Pyro's transforms (:class:`~pyro.distributions.transforms.AffineAutoregressive`,
:class:`~pyro.distributions.transforms.ConditionalAffineAutoregressive`), the site a
:class:`~pyro.distributions.TransformedDistribution` with a ``(d,)`` event, so every objective
and evaluation treats them as any other continuous site. The IAF samples in one pass and its
log-density at its own samples comes from the transforms' cache; the flow prior is the
inverse of an autoregressive transform, so its density at any z (a guide's sample) is one pass
too, and sampling from it (pictures) takes d passes. The last layer of every autoregressive
network starts at zero: an untrained flow is the identity, the flow prior N(0, I) and the IAF
guide the diagonal one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import (
    AffineAutoregressive,
    ConditionalAffineAutoregressive,
)
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn
from torch.nn import functional as F

from pyro_vae.nn import GaussianEncoder, GaussianHead, encoder_net, inv_softplus

#: q(z | x) for a batch of inputs: the posterior family applied to the encoder's outputs
Posterior = Callable[[torch.Tensor], dist.TorchDistribution]


class LatentMixture(dist.MixtureSameFamily):
    """A ``MixtureSameFamily`` whose support is the components' (R^d): torch has no transform
    for ``MixtureSameFamilyConstraint``, so Pyro's NUTS (``pyro-vae diagnose``) could not map
    the mixture's support to unconstrained space."""

    @property
    def support(self):
        return self.component_distribution.support

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """torch's, with ``x`` expanded to the components' batch before they score it (a
        flow conditioned on one context per component cannot broadcast a value against
        it: the VampPrior of an IAF guide)."""
        if self._validate_args:
            self._validate_sample(x)
        x = self._pad(x)
        batch = torch.broadcast_shapes(x.shape[:x.dim() - self._event_ndims],
                                       self.component_distribution.batch_shape)
        x = x.expand(*batch, *x.shape[x.dim() - self._event_ndims:])
        log_prob_x = self.component_distribution.log_prob(x)
        return torch.logsumexp(log_prob_x + torch.log_softmax(self.mixture_distribution.logits,
                                                               -1), -1)



def _zero_last_layer(arn: nn.Module) -> None:
    """The autoregressive network's output layer at zero: the affine step is the identity."""
    last = [m for m in arn.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def _flow_hidden(d: int) -> list[int]:
    return [3 * d + 1]  # Pyro's default for its autoregressive helpers


# -- priors -------------------------------------------------------------------------------------
class StandardNormal(nn.Module):
    """p(z) = N(0, I): no parameters."""

    def __init__(self, latent_dim: int, config, data_shape: tuple[int, ...]):
        super().__init__()
        self.latent_dim = latent_dim

    def dist(self, x: torch.Tensor, posterior: Posterior) -> dist.TorchDistribution:
        return dist.Normal(x.new_zeros(x.shape[0], self.latent_dim), 1.0).to_event(1)

    def sample(self, num: int, posterior: Posterior, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(num, self.latent_dim, device=like.device, dtype=like.dtype)


class _LearnedPrior(nn.Module):
    """A prior with batch shape ``()``: the data plate broadcasts it over the points."""

    def sample(self, num: int, posterior: Posterior, like: torch.Tensor) -> torch.Tensor:
        return self.dist(like, posterior).sample((num,)).reshape(num, -1)


class MixturePrior(_LearnedPrior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2), every parameter learned (pi = softmax of
    logits, sigma = softplus + 1e-3); the means start at N(0, I) draws, the scales at 1."""

    def __init__(self, latent_dim: int, config, data_shape: tuple[int, ...]):
        super().__init__()
        k = config.prior_components
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(torch.randn(k, latent_dim))
        self.raw_scales = nn.Parameter(torch.full((k, latent_dim),
                                                  float(inv_softplus(torch.tensor(1.0)))))

    def dist(self, x: torch.Tensor, posterior: Posterior) -> dist.TorchDistribution:
        return LatentMixture(dist.Categorical(logits=self.logits),
                             dist.Normal(self.locs, F.softplus(self.raw_scales) + 1e-3)
                             .to_event(1))


class VampPrior(_LearnedPrior):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's own family at K learned pseudo-inputs u_k
    (data-shaped; they start near 0.05 as in the paper, and :meth:`init_from_data` puts them on
    K random training points, the option of Tomczak & Welling's code)."""

    def __init__(self, latent_dim: int, config, data_shape: tuple[int, ...]):
        super().__init__()
        k = config.prior_components
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(k, *data_shape))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        pick = torch.randperm(x.shape[0])[:self.pseudo_inputs.shape[0]].to(x.device)
        u = x[pick].to(self.pseudo_inputs)
        self.pseudo_inputs[:u.shape[0]] = u  # fewer points than K: the rest stay as they are

    def dist(self, x: torch.Tensor, posterior: Posterior) -> dist.TorchDistribution:
        components = posterior(self.pseudo_inputs)  # batch (K,), event (d,)
        k = self.pseudo_inputs.shape[0]
        return LatentMixture(dist.Categorical(logits=self.pseudo_inputs.new_zeros(k)),
                             components)


class FlowPrior(_LearnedPrior):
    """p(z): N(0, I) pushed through ``flow_steps`` inverse affine autoregressive transforms (a
    masked autoregressive flow: the density of a given z is one pass per step)."""

    def __init__(self, latent_dim: int, config, data_shape: tuple[int, ...]):
        super().__init__()
        self.latent_dim = latent_dim
        self.flows = nn.ModuleList()
        for _ in range(config.flow_steps):
            arn = AutoRegressiveNN(latent_dim, _flow_hidden(latent_dim))
            _zero_last_layer(arn)
            self.flows.append(AffineAutoregressive(arn))

    def dist(self, x: torch.Tensor, posterior: Posterior) -> dist.TorchDistribution:
        base = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
        return dist.TransformedDistribution(base, [f.inv for f in self.flows])


# -- posteriors ---------------------------------------------------------------------------------
class DiagonalPosterior(nn.Module):
    """q(z | x) = N(mu(x), diag s(x)^2): the encoder gives (mu, s)."""

    context_dim = 0

    def __init__(self, latent_dim: int, config):
        super().__init__()

    def dist(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(loc, scale).to_event(1)

    def point(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The code that reconstructions decode: the mean."""
        return loc


class ContextHead(nn.Module):
    """``x -> (loc, scale, h)``: a diagonal Gaussian and a context vector ``h`` of
    ``context_dim`` from one :func:`~pyro_vae.nn.encoder_net` (either arch)."""

    def __init__(self, arch: str, in_shape, hidden, latent_dim: int, context_dim: int,
                 act: str = "relu", min_scale: float = 1e-4):
        super().__init__()
        self.latent_dim, self.context_dim, self.min_scale = latent_dim, context_dim, min_scale
        self.net = encoder_net(arch, in_shape, hidden, 2 * latent_dim + context_dim, act)

    def forward(self, x: torch.Tensor):
        loc, raw_scale, h = self.net(x).split(
            [self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale, h


class IAFPosterior(nn.Module):
    """Inverse autoregressive flow (Kingma et al. 2016): ``iaf_steps`` conditional affine
    autoregressive steps on a diagonal Gaussian, each conditioned on the encoder's context h
    (``latent_dim`` values); Pyro draws a random variable order per step."""

    def __init__(self, latent_dim: int, config):
        super().__init__()
        self.context_dim = latent_dim
        self.flows = nn.ModuleList()
        for _ in range(config.iaf_steps):
            arn = ConditionalAutoRegressiveNN(latent_dim, self.context_dim,
                                              _flow_hidden(latent_dim))
            _zero_last_layer(arn)
            self.flows.append(ConditionalAffineAutoregressive(arn))

    def dist(self, loc: torch.Tensor, scale: torch.Tensor,
             h: torch.Tensor) -> dist.TorchDistribution:
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1),
                                            [f.condition(h) for f in self.flows])

    def point(self, loc: torch.Tensor, scale: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The code that reconstructions decode: the base mean through the flow."""
        for f in self.flows:
            loc = f.condition(h)(loc)
        return loc


def make_encoder(posterior: nn.Module, arch: str, data_shape, hidden, latent_dim: int,
                 act: str) -> nn.Module:
    """The encoder a posterior family needs: (loc, scale) [+ its context h]. Without a context,
    the VAE's encoder of before (a checkpoint of an older run loads into it)."""
    if posterior.context_dim:
        return ContextHead(arch, data_shape, hidden, latent_dim, posterior.context_dim, act)
    if arch == "conv":
        return GaussianHead("conv", data_shape, hidden, latent_dim, act)
    return GaussianEncoder(data_shape, hidden, latent_dim, act)


@dataclass(frozen=True)
class Family:
    """One entry of a registry: the module class and a line for ``--help``/docs."""

    cls: type[nn.Module]
    help: str


PRIORS: dict[str, Family] = {
    "normal": Family(StandardNormal, "N(0, I)"),
    "mog": Family(MixturePrior, "a learned mixture of --prior-components diagonal Gaussians"),
    "vamp": Family(VampPrior, "VampPrior: the guide at --prior-components learned "
                              "pseudo-inputs"),
    "flow": Family(FlowPrior, "N(0, I) through --flow-steps masked autoregressive steps"),
}

POSTERIORS: dict[str, Family] = {
    "diag": Family(DiagonalPosterior, "a diagonal Gaussian"),
    "iaf": Family(IAFPosterior, "a diagonal Gaussian through --iaf-steps inverse "
                                "autoregressive steps conditioned on the encoder"),
}
