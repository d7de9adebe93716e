"""Neural building blocks shared by the models: MLPs and the amortized Gaussian encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import check_choice

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


class MLP(nn.Sequential):
    """``in -> hidden[0] -> ... -> hidden[-1] -> out`` with an activation between layers."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu"):
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(dims[-1], out_dim))
        super().__init__(*layers)


class GaussianEncoder(nn.Module):
    """x -> (loc, scale) of a diagonal Gaussian; the last ``len(in_shape)`` dims are flattened."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], latent_dim: int,
                 act: str = "relu", min_scale: float = 1e-4):
        super().__init__()
        self.event_ndim = len(in_shape)
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = MLP(math.prod(in_shape), hidden, 2 * latent_dim, act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x.flatten(-self.event_ndim))
        loc, raw_scale = h.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


class Decoder(nn.Module):
    """z -> an unconstrained tensor of ``out_shape`` (logits or Gaussian means)."""

    def __init__(self, latent_dim: int, hidden: Sequence[int], out_shape: Sequence[int],
                 act: str = "relu"):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = MLP(latent_dim, list(reversed(hidden)), math.prod(out_shape), act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.out_shape)
