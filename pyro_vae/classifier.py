"""A small digit classifier, to judge class-conditional samples.

A conditional model's samples of class c are "recognisably of class c" when a classifier
trained on the real training split labels them c. :func:`train_classifier` fits a small
convolutional network (two 3x3 stride-2 convolutions, one hidden layer) by Adam on the
training images of a labelled data set (grey values, plus a fresh binarized draw of each
image when the data use dynamic binarization, so it reads binary test digits and the grey
likelihood means a model draws alike); :func:`conditional_sample_accuracy` draws images
per asked class from ``model.sample(num, y)`` and returns the share
labelled as asked.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.data import Dataset
from pyro_vae.errors import ConfigError, DataError, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.nn import ConvEncoderNet


class DigitClassifier(nn.Module):
    """Image -> class logits: :class:`pyro_vae.nn.ConvEncoderNet` with one hidden layer."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, hidden: int = 128):
        super().__init__()
        self.net = ConvEncoderNet(shape, (hidden,), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        self.eval()
        return torch.cat([self(x[i:i + batch_size]).argmax(-1)
                          for i in range(0, len(x), batch_size)])


def train_classifier(data: Dataset, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, sampler=None) -> DigitClassifier:
    """Fit a :class:`DigitClassifier` on ``data``'s training split, reproducibly from ``seed``.

    The global RNG streams are untouched: the data order and binarized draws come from a
    private generator, and the weights are initialized on the CPU with torch's CPU generator
    seeded inside ``fork_rng(devices=[])``, which puts it back after; no CUDA generator is
    seeded or read (``torch.manual_seed`` would reseed every GPU's, which ``fork_rng`` with no
    devices does not restore). ``sampler`` (e.g. :class:`pyro_vae.debias.LatentDensitySampler`:
    ``sampler.permutation(generator)`` gives an epoch's indices) replaces the uniform order."""
    if data.train_y is None:
        raise DataError(f"data set {data.name} has no labels to train a classifier on")
    check_positive("epochs", epochs)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    num_classes = int(data.train_y.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only
        clf = DigitClassifier(data.shape, num_classes)
    clf = clf.to(data.device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    x, y = data.train_values(device=data.train_x.device), data.train_y  # host-fed: host
    clf.train()
    for _ in range(epochs):
        perm = (torch.randperm(len(x), generator=gen) if sampler is None
                else sampler.permutation(gen)).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx].to(data.device), y[idx.to(y.device)]  # x may stay on the host
            if data.binarize == "dynamic":  # grey values and a binarized draw of each
                u = torch.rand(xb.shape, generator=gen).to(xb.device)
                xb, yb = torch.cat([xb, (u < xb).to(xb.dtype)]), torch.cat([yb, yb])
            loss = F.cross_entropy(clf(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return clf.eval()


def accuracy(clf: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` that ``clf`` labels ``y``."""
    return (clf.predict(x) == y).double().mean().item()


@torch.no_grad()
def conditional_sample_accuracy(model: LatentModel, clf: DigitClassifier, num: int = 1000,
                                labels: torch.Tensor | None = None) -> dict:
    """Draw ``num`` images with labels 0, 1, ..., C-1 in turn (or ``labels``), classify them.

    Returns ``{"accuracy": share labelled as asked, "per_class": {c: share}, "num": num}``.
    """
    if not getattr(model, "num_classes", None):  # cvae's label task, ssvae
        raise ConfigError(f"model {model.name} does not generate by class")
    model.eval()
    if labels is None:
        labels = torch.arange(num, device=model.device) % model.num_classes
    labels = labels.to(model.device)
    images = torch.cat([model.sample(len(chunk), chunk) for chunk in labels.split(500)])
    hits = clf.predict(images) == labels
    per_class = {int(c): hits[labels == c].double().mean().item() for c in labels.unique()}
    return {"accuracy": hits.double().mean().item(), "per_class": per_class, "num": len(labels)}
