"""check_model_guide passes the registered pairs and names each kind of broken pair."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.data import load_dataset
from pyro_vae.models import MODELS, build_model
from pyro_vae.testing import assert_model_guide, check_model_guide


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_models_pass(name):
    data = load_dataset("linear-gaussian" if name == "linear" else "digits")
    settings = {} if name == "linear" else {"latent_dim": 2, "hidden": (16,)}
    model = build_model(name, data.shape, **settings)
    assert check_model_guide(model, data.test_x[:5]) == []
    assert len(pyro.get_param_store()) == 0  # no side effects
    assert all(p.grad is None for p in model.parameters())


class Pair(nn.Module):
    """A small correct pair: z ~ N(0, 1)^2, x ~ N(W z, 1); guide N(A x, s)."""

    observed_site = "x"
    latent_sites = ("z",)

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(3, 2))
        self.A = nn.Parameter(torch.randn(2, 3))
        self.s = nn.Parameter(torch.zeros(2))

    def model(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()).to_event(1))


class MissingSite(Pair):
    def guide(self, x, y=None):
        pyro.module("pair", self)


class ExtraSite(Pair):
    def guide(self, x, y=None):
        super().guide(x, y)
        pyro.sample("w", dist.Normal(0.0, 1.0))


class WrongShape(Pair):
    """The guide's z has 3 dimensions where the model's has 2; the model runs regardless."""

    def model(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z.sum(-1, keepdim=True) * self.W.sum(1)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x * self.A.sum(), self.s.exp().sum()).to_event(1))


class DiscreteGuide(Pair):
    def guide(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(torch.sigmoid(x @ self.A.T)).to_event(1))


class PositiveSupport(Pair):
    def model(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(x.new_ones(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ self.A.T - 10.0, 1.0).to_event(1))


class PlateMismatch(Pair):
    def guide(self, x, y=None):
        pyro.module("pair", self)
        pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()).to_event(2))


class NaNModel(Pair):
    def model(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            loc = z @ self.W.T * float("nan")
            pyro.sample("x", dist.Normal(loc, 1.0, validate_args=False).to_event(1), obs=x)


class UnusedParameter(Pair):
    def __init__(self):
        super().__init__()
        self.forgotten = nn.Parameter(torch.zeros(4))


class Raises(Pair):
    def model(self, x, y=None):
        raise ValueError("shapes do not line up")


class NotObserved(Pair):
    def model(self, x, y=None):
        pyro.module("pair", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1))


@pytest.mark.parametrize("cls,fragments", [
    (MissingSite, ["latent site 'z'", "not sampled by the guide"]),
    (ExtraSite, ["guide site 'w'", "not in the model"]),
    (WrongShape, ["site 'z'", "shape (4, 3)", "expects (4, 2)"]),
    (DiscreteGuide, ["site 'z'", "continuous", "discrete"]),
    (PositiveSupport, ["site 'z'", "outside the model's support"]),
    (PlateMismatch, ["site 'z'", "plates differ"]),
    (NaNModel, ["ELBO is not finite"]),
    (UnusedParameter, ["parameter 'forgotten'", "no gradient"]),
    (Raises, ["the model raised ValueError: shapes do not line up"]),
    (NotObserved, ["'x' is not observed"]),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_broken_pairs_are_named(cls, fragments):
    torch.manual_seed(0)
    x = torch.randn(4, 3)
    assert check_model_guide(Pair(), x) == []
    problems = check_model_guide(cls(), x)
    assert problems, cls.__name__
    text = " | ".join(problems)
    for fragment in fragments:
        assert fragment in text, text
    with pytest.raises(AssertionError, match="model/guide check failed"):
        assert_model_guide(cls(), x)
