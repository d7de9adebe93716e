r"""Exact ELBO, IWAE bound and RWS targets of a small one-layer Bernoulli latent model, by
enumerating every latent state -- the ground truth the estimators are tested against.

With K latent bits there are :math:`2^K` states z, so for each data point

.. math::

    \mathrm{ELBO} = \sum_z q(z|x)\,[\log p(x,z) - \log q(z|x)], \qquad
    \mathbb E[\mathcal L_k] = \sum_{z_1..z_k} \prod_j q(z_j|x)\,
        \log \frac1k \sum_j \frac{p(x,z_j)}{q(z_j|x)}

(:math:`2^{Kk}` combinations) are finite sums, and autograd gives their exact gradients.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import pyro.distributions as dist
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.models.bernoulli import BernoulliLatent

MAX_BITS = 12


def tiny_problem(bits: int = 3, pixels: int = 4, init_scale: float = 0.7
                 ) -> tuple[BernoulliLatent, torch.Tensor]:
    """A Bernoulli latent model of ``bits`` units and ``pixels`` pixels with every parameter
    drawn from N(0, init_scale^2) (after the caller seeds), and two data points: the problem
    the estimator tests and ``benchmarks/estimator_checks.py`` enumerate."""
    from pyro_vae.models import build_model

    model = build_model("bernoulli", (pixels,), latent_dim=bits)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, init_scale)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])[:, :pixels]
    return model, x


def latent_states(model: BernoulliLatent) -> torch.Tensor:
    """Every z in {0,1}^K as a ``(2^K, K)`` tensor."""
    k = model.config.latent_dim
    if model.config.layers != 1 or k > MAX_BITS:
        raise ConfigError(f"exact enumeration needs one layer of at most {MAX_BITS} latent bits")
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=k)), device=model.device)


def log_joint_and_guide(model: BernoulliLatent, x: torch.Tensor) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """log p(x, z) and log q(z | x) for every state z: two ``(len(x), 2^K)`` tensors."""
    states = latent_states(model)
    z = states.unsqueeze(1).expand(-1, len(x), -1)
    prior = dist.Bernoulli(logits=model.prior_logits).log_prob(z).sum(-1)
    lik = dist.Bernoulli(logits=model.x_logits(z)).log_prob(x).flatten(2).sum(-1)
    log_q = dist.Bernoulli(logits=model.encoder(x.flatten(1))).log_prob(z).sum(-1)
    return (prior + lik).T, log_q.T


def exact_elbo(model: BernoulliLatent, x: torch.Tensor) -> torch.Tensor:
    """The ELBO summed over the data points of ``x``."""
    log_p, log_q = log_joint_and_guide(model, x)
    return (log_q.exp() * (log_p - log_q)).sum()


def exact_iwae(model: BernoulliLatent, x: torch.Tensor, k: int) -> torch.Tensor:
    """E[L_k] summed over the data points of ``x`` (every combination of k particles)."""
    log_p, log_q = log_joint_and_guide(model, x)
    idx = torch.tensor(list(itertools.product(range(log_p.shape[1]), repeat=k)),
                       device=x.device)
    log_w = (log_p - log_q)[:, idx]
    prob = log_q[:, idx].sum(-1).exp()
    return (prob * (torch.logsumexp(log_w, -1) - math.log(k))).sum()


def exact_wake_phi_target(model: BernoulliLatent, x: torch.Tensor) -> torch.Tensor:
    """sum_z stop(p(z|x)) log q(z|x): its gradient is E_{p(z|x)}[grad log q], the limit of
    RWS's wake-phi estimate (minus the gradient of KL(p(z|x) || q(z|x)))."""
    log_p, log_q = log_joint_and_guide(model, x)
    return (torch.softmax(log_p, -1).detach() * log_q).sum()


def exact_gradient(fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]
                   ) -> torch.Tensor:
    """The flattened gradient of the *loss* ``-fn()`` (what ``loss_and_grads`` leaves)."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(-fn(), list(params))])
