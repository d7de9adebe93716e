"""Library-level checks of hostile input (the command-line probes are in test_probes.py)."""

import json
import math

import pytest
import torch

from pyro_vae import build_model, set_seed
from pyro_vae.errors import ConfigError, TrainingDiverged
from pyro_vae.metrics import json_ready
from pyro_vae.run_config import EvalConfig
from pyro_vae.structure import point_mass_sites


def test_metrics_json_is_valid_json_or_an_error_before_writing():
    ready = json_ready({"test_elbo": -90.5, "test_log_likelihood_stderr": math.nan,
                        "khat": [0.3, -math.inf], "test_iwae_bounds": {"5": -88.0}})
    assert ready == {"test_elbo": -90.5, "test_log_likelihood_stderr": None,
                     "khat": [0.3, None], "test_iwae_bounds": {"5": -88.0}}
    json.loads(json.dumps(ready, allow_nan=False))
    for bad in ({"test_log_likelihood": -math.inf}, {"train_elbo": math.nan},
                {"test_iwae_bounds": {"5": -math.inf}}):
        with pytest.raises(TrainingDiverged, match="metrics.json was not written"):
            json_ready(bad)


def test_a_point_mass_guide_has_no_posterior():
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    assert point_mass_sites(build_model("ae", (1, 8, 8)), x) == ["z"]
    assert point_mass_sites(build_model("dae", (1, 8, 8)), x) == ["z"]
    assert point_mass_sites(build_model("vae", (1, 8, 8)), x) == []


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70, 1.5, True])
def test_seeds_outside_what_every_generator_takes_are_refused(seed):
    with pytest.raises(ConfigError, match="from 0 to 4294967295"):
        set_seed(seed)
    with pytest.raises(ConfigError, match="from 0 to 4294967295|expects int"):
        EvalConfig(seed=seed)


def test_the_largest_seed_seeds_every_generator():
    set_seed(2**32 - 1)
    a = torch.rand(3)
    set_seed(2**32 - 1)
    assert torch.equal(a, torch.rand(3))


def test_evaluate_checks_class_labels_once_where_the_programs_no_longer_do():
    """cvae's programs check only the labels' shape (no host read per step); evaluate() checks
    their range before it runs them."""
    from pyro_vae import evaluate
    from pyro_vae.errors import DataError

    model = build_model("cvae", (1, 8, 8))
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    with pytest.raises(DataError, match=r"y must be 4 integers in 0\.\.9"):
        evaluate(model, x, torch.tensor([0, 1, 2, 11]), num_samples=10, iwae_ks=(5,))
    assert math.isfinite(evaluate(model, x, torch.tensor([0, 1, 2, 9]), num_samples=10,
                                  iwae_ks=(5,))["test_elbo"])
