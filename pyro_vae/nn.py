"""Neural building blocks shared by the models: MLPs and the amortized Gaussian encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, check_choice, check_positive

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


def check_network(config) -> None:
    """Check and normalise the network fields a model config shares (``latent_dim``,
    ``hidden`` as a tuple, ``activation``); called from the configs' ``__post_init__``."""
    config.hidden = tuple(config.hidden)
    check_positive("latent_dim", config.latent_dim)
    for h in config.hidden:
        check_positive("hidden layer size", h)
    check_choice("activation", config.activation, ACTIVATIONS)


def inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """The x with softplus(x) = y (y > 0): a raw parameter that starts a softplus-positive
    value at y."""
    return y + torch.log(-torch.expm1(-y))


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def check_image_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """``shape`` as a tuple, if it is an image's (C, H, W); else the one-line ConfigError of
    every conv network here."""
    if len(shape) != 3:
        raise ConfigError(f"--arch conv takes images (C, H, W), got points of shape "
                          f"{tuple(shape)}; use --arch mlp")
    return tuple(shape)


def downsampling(in_channels: int, channels: Sequence[int], act: str) -> list[nn.Module]:
    """Stride-2 3x3 convolutions halving the grid, from ``in_channels`` through ``channels``,
    each followed by an activation (the encoders' stack; :func:`upsampling` mirrors it)."""
    layers: list[nn.Module] = []
    for a, b in zip([in_channels, *channels[:-1]], channels, strict=True):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), activation(act)]
    return layers


def upsampling(chans: list[int], act: str) -> list[nn.Module]:
    """Transposed convolutions doubling the grid from ``chans[0]`` to ``chans[-1]`` channels,
    an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(chans) - 2:
            layers.append(activation(act))
    return layers


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


# -- convolutional blocks (``--arch conv``) ----------------------------------------------------
ARCHS = ("mlp", "conv")
CONV_CHANNELS = (32, 64)


def _conv_size(n: int, layers: int) -> int:
    """Spatial size after ``layers`` convolutions of kernel 3, stride 2, padding 1."""
    for _ in range(layers):
        n = (n + 1) // 2
    return n


class ConvEncoderNet(nn.Module):
    """Image ``(..., C, H, W)`` [and an extra vector ``(..., E)``] -> ``(..., out_dim)``.

    Two stride-2 3x3 convolutions (32 and 64 channels; 28x28 -> 14x14 -> 7x7), flattened,
    concatenated with ``extra`` (e.g. a one-hot label), then an MLP with ``hidden`` layers.
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_dim: int,
                 act: str = "relu", extra_dim: int = 0,
                 channels: Sequence[int] = CONV_CHANNELS):
        super().__init__()
        self.in_shape = check_image_shape(in_shape)
        self.conv = nn.Sequential(*downsampling(in_shape[0], channels, act), nn.Flatten())
        c = channels[-1]
        flat = c * _conv_size(in_shape[1], len(channels)) * _conv_size(in_shape[2], len(channels))
        self.mlp = MLP(flat + extra_dim, hidden, out_dim, act)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.in_shape))
        h = h.reshape(*lead, h.shape[-1])
        if extra is not None:
            h = torch.cat([h, extra.expand(*lead, extra.shape[-1])], -1)
        return self.mlp(h)


class ConvDecoderNet(nn.Module):
    """A vector ``(..., in_dim)`` -> an image-shaped tensor ``(..., C, H, W)`` of logits/means.

    The mirror of :class:`ConvEncoderNet`: an MLP to 64 x 7 x 7 (for 28x28), then two 4x4
    stride-2 transposed convolutions (7 -> 14 -> 28); odd sizes are cropped to ``out_shape``.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_shape: Sequence[int],
                 act: str = "relu", channels: Sequence[int] = CONV_CHANNELS):
        super().__init__()
        self.out_shape = check_image_shape(out_shape)
        n = len(channels)
        self.start = (channels[-1], _conv_size(out_shape[1], n), _conv_size(out_shape[2], n))
        self.mlp = nn.Sequential(MLP(in_dim, list(reversed(hidden)), math.prod(self.start), act),
                                 activation(act))
        self.deconv = nn.Sequential(*upsampling([*reversed(channels), out_shape[0]], act))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.mlp(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.deconv(h)[..., :self.out_shape[1], :self.out_shape[2]]
        return out.reshape(*lead, *self.out_shape)


class MLPEncoderNet(nn.Module):
    """The MLP counterpart of :class:`ConvEncoderNet`: flatten, concatenate ``extra``, MLP."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], out_dim: int,
                 act: str = "relu", extra_dim: int = 0):
        super().__init__()
        self.event_ndim = len(in_shape)
        self.net = MLP(math.prod(in_shape) + extra_dim, hidden, out_dim, act)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(-self.event_ndim)
        if extra is not None:
            h = torch.cat([h, extra.expand(*h.shape[:-1], extra.shape[-1])], -1)
        return self.net(h)


def encoder_net(arch: str, in_shape: Sequence[int], hidden: Sequence[int], out_dim: int,
                act: str = "relu", extra_dim: int = 0) -> nn.Module:
    """``x [, extra] -> (..., out_dim)`` by ``arch`` (``mlp`` or ``conv``)."""
    check_choice("arch", arch, ARCHS)
    cls = ConvEncoderNet if arch == "conv" else MLPEncoderNet
    return cls(in_shape, hidden, out_dim, act, extra_dim)


def decoder_net(arch: str, in_dim: int, hidden: Sequence[int], out_shape: Sequence[int],
                act: str = "relu") -> nn.Module:
    """``(..., in_dim) -> (..., *out_shape)`` by ``arch``; ``hidden`` is read in reverse."""
    check_choice("arch", arch, ARCHS)
    if arch == "conv":
        return ConvDecoderNet(in_dim, hidden, out_shape, act)
    return Decoder(in_dim, hidden, out_shape, act)


class GaussianHead(nn.Module):
    """``x [, extra]`` -> (loc, scale) of a diagonal Gaussian over ``latent_dim`` dims, through
    :func:`encoder_net` of either ``arch``."""

    def __init__(self, arch: str, in_shape: Sequence[int], hidden: Sequence[int],
                 latent_dim: int, act: str = "relu", extra_dim: int = 0,
                 min_scale: float = 1e-4):
        super().__init__()
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.net = encoder_net(arch, in_shape, hidden, 2 * latent_dim, act, extra_dim)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = self.net(x, extra).split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale


# -- initialisation (``init="iwae"``) ----------------------------------------------------------
INITS = ("torch", "iwae")


def glorot_init_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every linear and convolutional layer of
    ``module`` (Glorot & Bengio 2010), as the IWAE paper's code initialises its networks
    (``nnet.Linear.random`` of Burda et al. 2016); PyTorch's default draws smaller weights."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def set_output_bias_(decoder: nn.Module, mean: torch.Tensor) -> None:
    """Set the bias of ``decoder``'s last layer to the logit of ``mean``, the training data's
    mean pixel (clamped to [0.001, 0.999]), as the IWAE paper's code does for its Bernoulli
    decoder (``get_train_bias_np``): the untrained model starts at the data's marginal.
    Per pixel for the MLP decoder, per channel (the mean over pixels) for the conv one."""
    last = [m for m in decoder.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
    p = mean.clamp(1e-3, 1 - 1e-3)
    if isinstance(last, nn.Linear):
        p = p.reshape(-1)
    else:
        p = p.reshape(p.shape[0], -1).mean(-1)
    last.bias.copy_(torch.logit(p).to(last.bias))


# -- masked convolution (PixelCNN; the learned prior over a VQ-VAE's codes) -----------------
class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only the pixels before the centre in raster order (van den
    Oord et al. 2016): mask ``"A"`` hides the centre too (the first layer: the output at a
    position depends on the earlier positions only), ``"B"`` lets it through (later layers)."""

    def __init__(self, mask: str, in_channels: int, out_channels: int, kernel_size: int):
        check_choice("mask", mask, ("A", "B"))
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        k = kernel_size
        mask_tensor = torch.ones(k, k)
        mask_tensor[k // 2, k // 2 + (mask == "B"):] = 0
        mask_tensor[k // 2 + 1:] = 0
        self.register_buffer("mask", mask_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


# -- a grid of codes (the VQ-VAE: one code vector per position of a 7x7 grid) ----------------
class ConvGridEncoder(nn.Module):
    """``(..., C, H, W) -> (..., L, D)``: two stride-2 3x3 convolutions (the channels of
    :data:`pyro_vae.nn.CONV_CHANNELS`), a 3x3 and a 1x1 convolution to ``D`` per position;
    ``grid`` is the (h, w) of its L = h * w positions."""

    def __init__(self, in_shape, code_dim: int, act: str):
        super().__init__()
        in_shape = check_image_shape(in_shape)
        layers = len(CONV_CHANNELS)
        self.grid = (_conv_size(in_shape[1], layers), _conv_size(in_shape[2], layers))
        c = CONV_CHANNELS[-1]
        self.net = nn.Sequential(*downsampling(in_shape[0], CONV_CHANNELS, act),
                                 nn.Conv2d(c, c, 3, padding=1), activation(act),
                                 nn.Conv2d(c, code_dim, 1))
        self.in_shape = in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x.reshape(-1, *self.in_shape))  # (n, D, h, w)
        return h.flatten(2).transpose(1, 2).reshape(*x.shape[:-3], -1, h.shape[1])


class ConvGridDecoder(nn.Module):
    """``(..., L, D) -> (..., *out_shape)``: the mirror of :class:`ConvGridEncoder` (a 3x3
    convolution, two 4x4 stride-2 transposed ones; odd sizes cropped)."""

    def __init__(self, code_dim: int, grid: tuple[int, int], out_shape, act: str):
        super().__init__()
        self.grid, self.out_shape = grid, tuple(out_shape)
        chans = [*reversed(CONV_CHANNELS), out_shape[0]]
        self.net = nn.Sequential(nn.Conv2d(code_dim, chans[0], 3, padding=1), activation(act),
                                 *upsampling(chans, act))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-2]
        h = z.reshape(-1, *self.grid, z.shape[-1]).permute(0, 3, 1, 2).contiguous()
        out = self.net(h)[..., :self.out_shape[1], :self.out_shape[2]]
        return out.reshape(*lead, *self.out_shape)
