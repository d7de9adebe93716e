"""check_model_guide passes the registered pairs and names the site or parameter of each fault."""

import inspect
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae import testing
from pyro_vae.errors import ConfigError
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
            loc = z @ self.W.T + y[:, None]  # MODEL_Y
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            loc = x @ self.A.T + y[:, None]  # GUIDE_Y
            pyro.sample("z", dist.Normal(loc, self.s.exp()).to_event(1))


def at(obj, marker: str) -> str:
    """``test_testing.py:LINE (in FUNC)`` of the line of ``obj``'s source marked ``# marker``."""
    lines, start = inspect.getsourcelines(obj)
    line = start + next(i for i, text in enumerate(lines) if text.rstrip().endswith(f"# {marker}"))
    return f"test_testing.py:{line} (in {obj.__name__})"


def test_labels_reach_both_programs():
    pyro.set_rng_seed(0)
    x, y = torch.randn(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert check_model_guide(Conditional(), x, y) == []
    guide, model = check_model_guide(Conditional(), x)
    assert guide.startswith("the guide raised TypeError: 'NoneType' object is not subscriptable "
                            "at ")
    assert guide.endswith(at(Conditional.guide, "GUIDE_Y"))
    assert model.startswith("the model raised TypeError: 'NoneType' object is not subscriptable "
                            "(after sample site 'z') at ")
    assert model.endswith(at(Conditional.model, "MODEL_Y"))


# -- a port of Pyro's tutorial VAE: every problem of it in as few calls as possible ------------

class TutorialVAE(nn.Module):
    """Pyro's tutorial VAE as first ported: an ``nn.Module`` with ``model(x)``/``guide(x)``,
    each registering its own sub-module, ``pyro.plate("data", x.shape[0])``, an observed site
    ``'obs'``, a latent ``'latent'``; ``to_event=False``: the vector latent lacks
    ``.to_event(1)``; ``by_len=True``: the decoder's output is reshaped with ``len(x)``."""

    def __init__(self, to_event: bool = False, by_len: bool = True):
        super().__init__()
        self.to_event, self.by_len = to_event, by_len
        self.encoder = nn.Linear(3, 4)
        self.decoder = nn.Linear(2, 3)

    def latent(self, loc, scale):
        d = dist.Normal(loc, scale)
        return d.to_event(1) if self.to_event else d

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", self.latent(x.new_zeros(len(x), 2), 1.0))  # MODEL_LATENT
            out = self.decoder(z)
            loc = out.reshape(len(x), 3) if self.by_len else out.reshape(z.shape[:-1] + (3,))  # LEN
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("latent", self.latent(loc, log_scale.exp()))  # GUIDE_LATENT


SIGNATURE_PROBLEMS = [
    "model(x) does not take y and num_data: write def model(self, x, y=None, num_data=None)",
    "guide(x) does not take y and num_data: write def guide(self, x, y=None, num_data=None)",
]
NAME_PROBLEMS = [
    "the model has no sample site 'x' (LatentModel's default observed_site): name it 'x' or set "
    "observed_site = 'obs'",
    "latent_sites declares ['z'] (LatentModel's default) but the model's latent sites are "
    "['latent']: set latent_sites = ('latent',)",
]
TO_EVENT_HINT = ("site 'latent' has size 2 at dim -1 where plate 'data' has 4: if 2 is a vector "
                 "latent's dimension, declare it an event dim with .to_event(1)")
PARTICLE_HINT = ("evaluation and multi-sample objectives run the programs vectorized over "
                 "particles: a sample site's value has extra leading dimensions; reshape with "
                 "z.shape[:-1], never len(x)")


def test_a_tutorial_port_gets_its_problems_together():
    x = torch.randn(4, 3)
    not_latent_model = (
        f"train needs a pyro_vae.LatentModel; TutorialVAE (tests/test_testing.py:"
        f"{inspect.getsourcelines(TutorialVAE)[1]}) is a torch.nn.Module: subclass "
        "pyro_vae.LatentModel and give model/guide the signature (x, y=None, num_data=None) "
        "(see docs/new_model.md)")
    # as ported: the contract, and the missing .to_event in both programs, in one call
    problems = check_model_guide(TutorialVAE(), x)
    assert problems[:3] == [not_latent_model] + SIGNATURE_PROBLEMS
    guide, model = problems[3:]
    assert guide.startswith("the guide raised ValueError: Shape mismatch inside plate('data') at "
                            "site latent dim -1, 4 vs 2 at ")
    assert guide.endswith(f"{at(TutorialVAE.guide, 'GUIDE_LATENT')}; {TO_EVENT_HINT}")
    assert model.endswith(f"{at(TutorialVAE.model, 'MODEL_LATENT')}; {TO_EVENT_HINT}")
    # with .to_event(1): the len(x) reshape, found by the particle run, and the site names;
    # the sub-modules registered under their own names pass
    problems = check_model_guide(TutorialVAE(to_event=True), x)
    assert problems[:-1] == [not_latent_model] + SIGNATURE_PROBLEMS + NAME_PROBLEMS
    assert problems[-1].startswith("the model raised RuntimeError: shape '[4, 3]' is invalid "
                                   "for input of size 24 with 2 vectorized particles at ")
    assert problems[-1].endswith(f"{at(TutorialVAE.model, 'LEN')}; {PARTICLE_HINT}")
    # reshaped with z.shape[:-1]: only what subclassing LatentModel fixes is left
    problems = check_model_guide(TutorialVAE(to_event=True, by_len=False), x)
    assert problems == [not_latent_model] + SIGNATURE_PROBLEMS + NAME_PROBLEMS


class TutorialAsLatentModel(Pair):
    """The tutorial port made right: sub-modules registered under their own names."""

    def __init__(self):
        LatentModel.__init__(self, PairConfig(), (3,))
        self.encoder, self.decoder = nn.Linear(3, 4), nn.Linear(2, 3)

    def model(self, x, y=None, num_data=None):
        pyro.module("decoder", self.decoder)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            loc = self.decoder(z).reshape(z.shape[:-1] + (3,))
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module("encoder", self.encoder)
        with self.data_plate(x, num_data):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def test_sub_modules_registered_under_their_own_names_pass():
    assert check_model_guide(TutorialAsLatentModel(), torch.randn(4, 3)) == []


# -- more broken pairs, one a new message -----------------------------------------------------

class ReshapesByLenX(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            loc = (z @ self.W.T).reshape(len(x), 3)  # RESHAPE
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


class NoNumData(Pair):
    def model(self, x, y=None):
        super().model(x, y)

    def guide(self, x, y=None, **kwargs):
        super().guide(x, y)


class KeywordOnlyY(Pair):
    def model(self, x, *, y=None, num_data=None):
        super().model(x, y, num_data)


class GuideTakesNoX(Pair):
    def guide(self):
        pass


class ObservesObs(Pair):
    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        with self.data_plate(x, num_data):
            z = pyro.sample("z", self.prior(x))
            pyro.sample("obs", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)


class VectorLatentOutsidePlate(Pair):
    """z sampled outside the data plate and without .to_event: batch shape (4, 2)."""

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0))
        with self.data_plate(x, num_data):
            pyro.sample("x", dist.Normal(z @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        pyro.sample("z", dist.Normal(x @ self.A.T, self.s.exp()))


class GuideTakesNoXModelObservesObs(GuideTakesNoX, ObservesObs):
    pass


MORE_BROKEN = [
    (ReshapesByLenX, ["the model raised RuntimeError: shape '[4, 3]' is invalid for input of "
                      "size 24 with 2 vectorized particles at ",
                      f"{at(ReshapesByLenX.model, 'RESHAPE')}; {PARTICLE_HINT}"]),
    (NoNumData, ["model(x, y) does not take num_data: write def model(self, x, y=None, "
                 "num_data=None)"]),
    (KeywordOnlyY, ["model(x, *, y, num_data) does not take y as its second argument: write "
                    "def model(self, x, y=None, num_data=None)"]),
    (GuideTakesNoX, ["guide() cannot be called as guide(x): write def guide(self, x, y=None, "
                     "num_data=None)"]),
    (ObservesObs, ["the model has no sample site 'x' (its observed_site): name it 'x' or set "
                   "observed_site = 'obs'"]),
    (VectorLatentOutsidePlate, [
        "model site 'z' is outside the 'data' plate",
        "model site 'z' has batch shape (4, 2), more dims than max_plate_nesting = 1: its "
        "size-2 dim -1 is in no plate: if 2 is a vector latent's dimension, declare it an event "
        "dim with .to_event(1)", "guide site 'z' has batch shape (4, 2)"]),
]


@pytest.mark.parametrize("cls,expected", MORE_BROKEN, ids=[c.__name__ for c, _ in MORE_BROKEN])
def test_more_broken_pairs_are_named(cls, expected):
    test_broken_pair_is_named(cls, expected)


def test_a_signature_problem_does_not_stop_the_other_checks():
    assert check_model_guide(NoNumData(), torch.randn(4, 3)) == [
        "model(x, y) does not take num_data: write def model(self, x, y=None, num_data=None)"]
    assert check_model_guide(GuideTakesNoX(), torch.randn(4, 3)) == [
        "guide() cannot be called as guide(x): write def guide(self, x, y=None, num_data=None)"]
    problems = check_model_guide(GuideTakesNoXModelObservesObs(), torch.randn(4, 3))
    assert problems == [  # the model alone is still checked
        "guide() cannot be called as guide(x): write def guide(self, x, y=None, num_data=None)",
        "the model has no sample site 'x' (its observed_site): name it 'x' or set observed_site "
        "= 'obs'"]


def plate(x, num_data):
    return pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x)))


class PlainPair:
    """Not a module at all: programs without parameters, with the right signature."""

    def model(self, x, y=None, num_data=None):
        with plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(self, x, y=None, num_data=None):
        with plate(x, num_data):
            pyro.sample("z", dist.Normal(x.new_zeros(len(x), 2), 1.0).to_event(1))


class OnlyAModel(nn.Module):
    def model(self, x, y=None, num_data=None):
        PlainPair().model(x)


def test_anything_else_is_checked_with_latent_model_defaults():
    x = torch.randn(4, 1)
    problems = check_model_guide(PlainPair(), x)
    assert len(problems) == 1 and problems[0].startswith(
        "train needs a pyro_vae.LatentModel; PlainPair (tests/test_testing.py:")
    assert problems[0].endswith(") is not a torch.nn.Module: subclass pyro_vae.LatentModel and "
                                "give model/guide the signature (x, y=None, num_data=None) (see "
                                "docs/new_model.md)")
    problems = check_model_guide(OnlyAModel(), x)
    assert problems[1:] == ["OnlyAModel has no guide method: write def guide(self, x, y=None, "
                            "num_data=None)"]


@pytest.mark.parametrize("result,expected", [
    (torch.zeros(2, 3), "the log weights of 2 vectorized particles have shape (2, 3), not (2, 4)"),
    (torch.full((2, 4), float("nan")),
     "the log weights of 2 vectorized particles (as evaluation computes them) are not finite"),
    (RuntimeError("The expanded size of the tensor (4) must match"),
     "the log weights of 2 vectorized particles could not be formed (RuntimeError: The expanded "
     "size of the tensor (4) must match)"),
    (ConfigError("per-data-point bounds need every sample site inside the 'data' plate"),
     "evaluation refuses the pair: per-data-point bounds need every sample site inside the "
     "'data' plate"),
], ids=["shape", "nan", "raises", "refuses"])
def test_what_the_particle_run_reports(monkeypatch, result, expected):
    def log_weights(model, x, y, num_particles):
        model.guide(x, y)
        model.model(x, y)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(testing, "log_weights", log_weights)
    assert [p.split("; evaluation and")[0] for p in check_model_guide(Pair(), torch.randn(4, 3))
            ] == [expected]


def test_a_non_finite_elbo_is_not_reported_twice():
    problems = check_model_guide(NaNLikelihood(), torch.randn(4, 3))
    assert problems == ["the ELBO is not finite (nan): the log density of model site 'x' is not "
                        "finite"]
