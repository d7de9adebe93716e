"""The pairs of docs/new_model.md (docs/new_model/*.py) do what the page says."""

from pathlib import Path

import pytest

from pyro_vae import RunConfig, TrainConfig, load_dataset, open_run, run
from pyro_vae.models import build_model, resolve
from pyro_vae.testing import check_model_guide

DOCS = Path(__file__).resolve().parents[1] / "docs" / "new_model"


@pytest.mark.parametrize("spec,dataset", [
    (f"{DOCS / 'fa.py'}:FactorAnalysis", "linear-gaussian"),
    (f"{DOCS / 'tutorial_vae.py'}:TutorialVAE", "mnist-5k"),
], ids=["fa", "tutorial-port"])
def test_the_pages_pairs_pass_the_checks_train_and_reopen(spec, dataset, tmp_path):
    data = load_dataset(dataset)
    assert check_model_guide(build_model(spec, data.shape), data.test_x[:8]) == []
    config = RunConfig.for_model(spec, dataset=dataset,
                                 train=TrainConfig(epochs=1, batch_size=500),
                                 eval={"num_samples": 50, "pictures": False})
    metrics = run(config, tmp_path / "run", progress=False).metrics
    assert metrics["test_elbo"] <= metrics["test_log_likelihood"] < 0
    assert open_run(tmp_path / "run").config.model == spec


def test_the_unported_tutorial_vae_gets_the_pages_list():
    module = __import__("sys").modules[resolve(f"{DOCS / 'tutorial_vae.py'}:TutorialVAE")
                                       .cls.__module__]
    problems = check_model_guide(module.PyroTutorialVAE(), load_dataset("mnist-5k").test_x[:8])
    starts = ["train needs a pyro_vae.LatentModel; PyroTutorialVAE",
              "model(x) does not take y and num_data", "guide(x) does not take y and num_data",
              "the model has no sample site 'x'", "latent_sites declares ['z']"]
    assert [p[:len(s)] for p, s in zip(problems, starts, strict=True)] == starts
    page = (DOCS.parent / "new_model.md").read_text()
    assert all(p.replace(str(DOCS.parent.parent) + "/", "") in page for p in problems[1:])
