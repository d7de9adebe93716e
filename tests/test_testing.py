"""check_model_guide passes the registered pairs and names the site or parameter of each fault."""

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae.models import LatentModel, build_model
from pyro_vae.testing import assert_model_guide, check_model_guide


def _binary_images():
    return torch.bernoulli(torch.full((5, 1, 8, 8), 0.3))


@pytest.mark.parametrize("name,settings,make_x", [
    ("vae", dict(latent_dim=2, hidden=(16,)), _binary_images),
    ("vae", dict(latent_dim=2, hidden=(16,), likelihood="gaussian"),
     lambda: torch.rand(5, 1, 8, 8)),
    ("linear", {}, lambda: torch.randn(5, 10)),
    ("ae", dict(latent_dim=2, hidden=(16,)), _binary_images),
    ("dae", dict(latent_dim=2, hidden=(16,), likelihood="gaussian", corruption="gaussian"),
     lambda: torch.rand(5, 1, 8, 8)),
], ids=["vae-bernoulli", "vae-gaussian", "linear", "ae", "dae-gaussian"])
def test_registered_models_pass(name, settings, make_x):
    pyro.set_rng_seed(0)
    x = make_x()
    model = build_model(name, tuple(x.shape[1:]), **settings)
    assert check_model_guide(model, x) == []
    assert_model_guide(model, x)  # does not raise


def test_the_check_has_no_side_effects():
    pyro.set_rng_seed(0)
    model = build_model("vae", (1, 8, 8), latent_dim=2, hidden=(16,))
    x = _binary_images()
    pyro.param("left_over", torch.zeros(2))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert check_model_guide(model, x) == []
    assert len(pyro.get_param_store()) == 0
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # a seeded run after it is unchanged
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@dataclass
class PairConfig:
    latent_dim: int = 2


class Pair(LatentModel):
    """A small correct pair: z ~ N(0, I_2), x ~ N(W z, I_3); guide N(A x, diag(exp s)^2)."""

    name = "pair"
    config_class = PairConfig
    data_kinds = ("real",)

    def __init__(self, guide_dim: int = 2):
        super().__init__(PairConfig(), (3,))
        self.W = nn.Parameter(torch.randn(3, 2))
        self.A = nn.Parameter(torch.randn(guide_dim, 3))
        self.s = nn.Parameter(torch.zeros(guide_dim))

    def prior(self, x):
        return dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1)

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()).to_event(1))

    def sample(self, num, y=None):
        return torch.randn(num, 2) @ self.W.T

    def encode(self, x, y=None):
        return x @ self.A.T, self.s.exp().expand(len(x), -1)

    def reconstruct(self, x, y=None):
        return self.encode(x)[0] @ self.W.T


class GuideMissesZ(Pair):
    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)


class GuideHasExtraW(Pair):
    def guide(self, x, y=None, num_data=None):
        super().guide(x, y, num_data)
        pyro.sample("w", dist.Normal(0.0, 1.0))


class GuideZHasThreeDims(Pair):
    """The guide's z has 3 dimensions where the model's has 2 (the model then fails too)."""

    def __init__(self):
        super().__init__(guide_dim=3)


class BernoulliGuideForNormalZ(Pair):
    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Bernoulli(logits=x @ self.A.T).to_event(1))


class NormalGuideForGammaZ(Pair):
    def prior(self, x):
        return dist.Gamma(x.new_ones(len(x), 2), 1.0).to_event(1)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T - 10.0, self.s.exp()).to_event(1))


class GuideZOutsidePlate(Pair):
    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()).to_event(2))


class NaNLikelihood(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            scale = torch.full_like(x, -1.0).sqrt()  # NaN, unchecked below
            pyro.sample("x", dist.Normal(z @ self.W.T, scale, validate_args=False).to_event(1),
                        obs=x)


class UnusedParameter(Pair):
    def __init__(self):
        super().__init__()
        self.forgotten = nn.Parameter(torch.zeros(4))


class InfiniteGradient(Pair):
    """A finite loss whose gradient in ``t`` is infinite: d sqrt(t) / dt at t = 0."""

    def __init__(self):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(()))

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            loc = z @ self.W.T * (1 + self.t.sqrt())
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


class NotRegistered(Pair):
    """Uses its parameters but never calls pyro.module: SVI would not see them."""

    def model(self, x, y=None, num_data=None):
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()).to_event(1))


class ModelRaises(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", self.prior(x))
            raise ValueError("decoder shapes do not line up")


class GuideRaises(Pair):
    def guide(self, x, y=None, num_data=None):
        raise KeyError("encoder")


class XNotObserved(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1))


class ObservesOtherThanX(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=2 * x)


class WrongLatentSites(Pair):
    latent_sites = ("z", "u")


class IgnoresNumData(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)


class GlobalLatentOutsideData(Pair):
    latent_sites = ("shift", "z")

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T + shift, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        super().guide(x, y, num_data)
        pyro.sample("shift", dist.Normal(self.s.sum(), 1.0))


class TooManyBatchDims(Pair):
    """z without .to_event in an inner plate: two batch dims, max_plate_nesting is 1."""

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        data = self.data_plate(x, num_data)
        with data, pyro.plate("latent", 2, dim=-2):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2, len(x)), 1.0))
        with data:
            pyro.sample("x", dist.Normal(z.T @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data), pyro.plate("latent", 2, dim=-2):
            pyro.sample("z", dist.Normal((x @ self.A.T).T, self.s.exp()[:, None]))


BROKEN = [
    (GuideMissesZ, ["latent site 'z' of the model is not sampled by the guide"]),
    (GuideHasExtraW, ["guide site 'w' is not in the model"]),
    (GuideZHasThreeDims, ["site 'z': the guide samples shape (4, 3) but the model expects (4, 2)",
                          "the model raised RuntimeError", "when replayed on the guide's samples"]),
    (BernoulliGuideForNormalZ, ["site 'z': the model's distribution is continuous but the "
                                "guide's is discrete"]),
    (NormalGuideForGammaZ, ["site 'z': the guide's sample lies outside the model's support"]),
    (GuideZOutsidePlate, ["site 'z': plates differ, model [('data', -1, 4)] vs guide []"]),
    (NaNLikelihood, ["the ELBO is not finite", "model site 'x'"]),
    (UnusedParameter, ["parameter(s) 'forgotten' get no gradient"]),
    (InfiniteGradient, ["parameter(s) 't' get a NaN or infinite gradient"]),
    (NotRegistered, ["parameter(s) 'W', 'A', 's' are not registered with Pyro"]),
    (ModelRaises, ["the model raised ValueError: decoder shapes do not line up (after sample "
                   "site 'z')"]),
    (GuideRaises, ["the guide raised KeyError: 'encoder'"]),
    (XNotObserved, ["model site 'x' is not observed"]),
    (ObservesOtherThanX, ["model site 'x' observes something other than x"]),
    (WrongLatentSites, ["latent_sites declares ['u', 'z'] but the model's latent sites are "
                        "['z']"]),
    (IgnoresNumData, ["model site 'z' is not scaled by num_data / len(x)",
                      "model site 'x' is not scaled"]),
    (GlobalLatentOutsideData, ["model site 'shift' is outside the 'data' plate"]),
    (TooManyBatchDims, ["model site 'z' has batch shape (2, 4)", "guide site 'z' has batch shape",
                        "max_plate_nesting = 1"]),
]


def test_the_correct_pair_passes():
    pyro.set_rng_seed(0)
    assert check_model_guide(Pair(), torch.randn(4, 3)) == []


@pytest.mark.parametrize("cls,expected", BROKEN, ids=[c.__name__ for c, _ in BROKEN])
def test_broken_pair_is_named(cls, expected):
    pyro.set_rng_seed(0)
    x = torch.randn(4, 3)
    module = cls()
    problems = check_model_guide(module, x)
    text = "\n".join(problems)
    for fragment in expected:
        assert fragment in text, text
    assert len(pyro.get_param_store()) == 0
    with pytest.raises(AssertionError) as info:
        assert_model_guide(module, x)
    assert str(info.value).splitlines()[1:] == [f"- {p}" for p in problems]


class Conditional(Pair):
    """A pair that uses the label ``y`` in both programs."""

    is_conditional = True

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("x", dist.Normal(z @ self.W.T + y[:, None], 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            pyro.sample("z", dist.Normal(x @ self.A.T + y[:, None], self.s.exp()).to_event(1))


def test_labels_reach_both_programs():
    pyro.set_rng_seed(0)
    x, y = torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert check_model_guide(Conditional(), x, y) == []
    assert check_model_guide(Conditional(), x) == [
        "the guide raised TypeError: 'NoneType' object is not subscriptable",
        "the model raised TypeError: 'NoneType' object is not subscriptable (after sample site "
        "'z')"]
