"""Pyro's tutorial VAE (pyro.ai/examples/vae.html) and its port to a pyro_vae pair.

``PyroTutorialVAE`` is the tutorial's class as written there (an ``nn.Module`` whose model and
guide take only ``x``). ``TutorialVAE`` is the port, with the smallest changes that make it a
:class:`pyro_vae.LatentModel` (each marked ``# port:``); the encoder and decoder are untouched,
and the sub-modules keep their own names in the param store (``pyro.module("decoder", ...)``),
which pyro_vae resumes exactly.

    pyro-vae check docs/new_model/tutorial_vae.py:TutorialVAE
    pyro-vae train docs/new_model/tutorial_vae.py:TutorialVAE --epochs 100 --out runs/tutorial
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae import LatentModel


class Encoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        x = x.reshape(-1, 784)
        hidden = self.softplus(self.fc1(x))
        z_loc = self.fc21(hidden)
        z_scale = torch.exp(self.fc22(hidden))
        return z_loc, z_scale


class Decoder(nn.Module):
    def __init__(self, z_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, 784)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        hidden = self.softplus(self.fc1(z))
        loc_img = self.sigmoid(self.fc21(hidden))
        return loc_img


class PyroTutorialVAE(nn.Module):
    """The tutorial's class, unchanged."""

    def __init__(self, z_dim=50, hidden_dim=400):
        super().__init__()
        self.encoder = Encoder(z_dim, hidden_dim)
        self.decoder = Decoder(z_dim, hidden_dim)
        self.z_dim = z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, 784))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


@dataclass
class TutorialConfig:  # port: the constructor's arguments become typed settings (flags)
    z_dim: int = 50
    hidden_dim: int = 400


class TutorialVAE(LatentModel):  # port: a LatentModel
    name = "tutorial_vae"
    config_class = TutorialConfig  # port
    observed_site = "obs"  # port: the tutorial's site names
    latent_sites = ("latent",)

    def __init__(self, config, data_shape):  # port: (config, data_shape)
        super().__init__(config, data_shape)
        self.encoder = Encoder(config.z_dim, config.hidden_dim)
        self.decoder = Decoder(config.z_dim, config.hidden_dim)
        self.z_dim = config.z_dim

    def model(self, x, y=None, num_data=None):  # port: the signature
        pyro.module("decoder", self.decoder)
        with self.data_plate(x, num_data):  # port: scaled to the data set
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder(z).reshape(*z.shape[:-1], *self.data_shape)  # port: x's shape
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(3),
                        obs=x)  # port: observe x itself

    def guide(self, x, y=None, num_data=None):  # port: the signature
        pyro.module("encoder", self.encoder)
        with self.data_plate(x, num_data):  # port
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    # port: what the pictures use
    def encode(self, x, y=None):
        return self.encoder(x)

    @torch.no_grad()
    def sample(self, num, y=None):
        z = torch.randn(num, self.z_dim, device=self.device)
        return self.decoder(z).reshape(num, *self.data_shape)

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.decoder(self.encoder(x)[0]).reshape(x.shape)
