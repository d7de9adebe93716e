"""A VAE whose sampling noise is a fixed function of each data point (not a test module).

``pyro-vae train tests/dist_models.py:PointNoiseVAE`` trains the ``vae`` pair except that the
guide's noise for point x is ``eps(x) = sin(1000 * x P)`` (P a fixed random matrix) instead of
a fresh N(0, I) draw: ``z = loc(x) + scale(x) * eps(x)`` with the same log-density. The noise
of a point is then the same whichever process scores it and whatever minibatch holds it, so
a data-parallel run and a one-process run take the same gradient steps
(tests/test_distributed.py); with the real ``vae`` each rank draws its own stream.

From its sixth call on, the guide also shifts ``loc`` by ``pyro.param("late_shift")``, created
then with a random initial value: the param store grows in the middle of training, and each
rank would draw another value (ranks > 0 have their own generators) unless the engine
broadcasts rank 0's.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.models.vae import VAE


class PointNormal(dist.Normal):
    """Normal(loc, scale) whose ``rsample`` is ``loc + scale * eps`` for given ``eps``."""

    def __init__(self, loc, scale, eps, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.eps = eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return PointNormal(self.loc.expand(shape), self.scale.expand(shape),
                           self.eps.expand(shape), validate_args=False)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        return self.loc.expand(shape) + self.scale.expand(shape) * self.eps.expand(shape)


class PointNoiseVAE(VAE):
    name = "point_noise_vae"

    def __init__(self, config, data_shape):
        super().__init__(config, data_shape)
        gen = torch.Generator().manual_seed(0)
        dim = int(torch.Size(data_shape).numel())
        self.register_buffer("noise_projection",
                             torch.randn(dim, config.latent_dim, generator=gen))
        self.calls = 0

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        loc, scale = self.encoder(x)
        self.calls += 1
        if self.calls > 5:  # a parameter born late, from the global generator
            loc = loc + pyro.param("late_shift", lambda: 0.1 * torch.randn(loc.shape[-1]))
        eps = torch.sin(1000.0 * (x.flatten(-len(self.data_shape)) @ self.noise_projection))
        with self.data_plate(x, num_data):
            pyro.sample("z", PointNormal(loc, scale, eps.expand_as(loc)).to_event(1))
