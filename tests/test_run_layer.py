"""The run layer: RunConfig <-> config.json, run / resume / finish / open_run, the registries."""

import json
from dataclasses import dataclass

import pytest
from pyro.infer import Trace_ELBO

from pyro_vae import EvalConfig, RunConfig, TrainConfig, open_run, resume, run
from pyro_vae import objectives as obj
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError, RunFolderError
from pyro_vae.metrics import METRICS, check_keys, summary_rows
from pyro_vae.runner import evaluate_run
from pyro_vae.settings import Setting, coerce, parse_text

SMALL = {"latent_dim": 3, "hidden": (16,)}


def _config(**train):
    return RunConfig.for_model("vae", dataset="digits", train={"epochs": 1, "batch_size": 64,
                                                                **train},
                               eval={"num_samples": 50}, **SMALL)


def test_run_config_round_trips_through_json():
    config = _config(beta=2.0)
    again = RunConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config
    assert again.model_config == {**{"activation": "relu", "likelihood": "bernoulli",
                                     "arch": "mlp", "init": "torch", "prior": "normal",
                                     "prior_components": 50, "flow_steps": 2,
                                     "posterior": "diag", "iaf_steps": 2},
                                  "latent_dim": 3, "hidden": [16]}
    assert again.model_settings().hidden == (16,)  # typed by the config dataclass
    assert RunConfig.for_model("gmm", dataset="gmm-2d").train.objective == "enum"


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["train"].update(lr="0.1"), "setting 'lr' expects float"),
    (lambda d: d["train"].update(nope=1), "unknown setting 'nope'"),
    (lambda d: d.update(train=[1]), "train must be a JSON object"),
    (lambda d: d["model_config"].update(hidden="x"), None),
    (lambda d: d.pop("dataset"), "not a pyro_vae run config"),
], ids=["type", "unknown", "not-a-dict", "model-setting", "missing"])
def test_a_hand_edited_config_is_one_line(tmp_path, mutate, message, capsys):
    result = run(_config(), tmp_path / "r", progress=False)
    data = json.loads((result.run.path / "config.json").read_text())
    mutate(data)
    (result.run.path / "config.json").write_text(json.dumps(data))
    code = main(["evaluate", str(result.run.path), "--num-samples", "50", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert message is None or message in err[0]


def test_a_run_evaluates_again_to_the_same_numbers(tmp_path):
    result = run(_config(), tmp_path / "r", progress=False)
    check_keys(json.loads((tmp_path / "r" / "metrics.json").read_text()))
    again = evaluate_run(tmp_path / "r", EvalConfig(50, pictures=False), progress=False)
    for key in ("test_elbo", "test_iwae", "test_log_likelihood", "active_units"):
        assert again[key] == result.metrics[key], key
    opened = open_run(tmp_path / "r")
    assert not opened.model.training and opened.config == result.run.config


def test_resume_refuses_what_it_cannot_keep(tmp_path):
    run(_config(), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="--lr 0.1 differs from the run's 0.001"):
        resume(tmp_path / "r", epochs=2, lr=0.1, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(_config(), tmp_path / "r", progress=False)
    with pytest.raises(RunFolderError, match="nowhere is not a folder"):
        resume(tmp_path / "nowhere", epochs=2)
    result = resume(tmp_path / "r", epochs=2, lr=1e-3, progress=False)  # restated: fine
    assert result.metrics["epochs"] == 2


def test_the_cli_restates_settings_on_resume(tmp_path, capsys):
    argv = ["train", "vae", "--dataset", "digits", "--latent-dim", "3", "--hidden", "16",
            "--eval-samples", "0", "--no-progress", "--out", str(tmp_path / "r")]
    assert main([*argv, "--epochs", "1"]) == 0
    assert main([*argv, "--epochs", "2", "--resume"]) == 0  # the same command, plus --resume
    assert main([*argv, "--epochs", "3", "--resume", "--hidden", "8"]) == 2
    assert "--hidden 8 differs from the run's (16,)" in capsys.readouterr().err


def test_every_objective_states_its_capabilities():
    for name, spec in obj.OBJECTIVES.items():
        assert spec.name == name and spec.min_particles >= 1
    config = TrainConfig(objective="iwae", num_particles=5)
    with pytest.raises(ConfigError, match="needs reparameterizable latents; model bernoulli"):
        obj.check_model(config, __import__("pyro_vae.models", fromlist=["x"]).BernoulliLatent)
    with pytest.raises(ConfigError, match="applies to the tracegraph objective only"):
        TrainConfig(objective="trace", baseline="neural")
    with pytest.raises(ConfigError, match="needs --num-particles >= 2"):
        TrainConfig(objective="vimco", num_particles=1)
    with pytest.raises(ConfigError, match="needs the fast engine"):
        TrainConfig(objective="tracegraph", lr_schedule="iwae")


class HalfELBO(Trace_ELBO):
    """A new objective for the test: half the ELBO (same optimum)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return 0.5 * super().differentiable_loss(model, guide, *args, **kwargs)


def test_adding_an_objective_is_one_registry_entry(tmp_path, capsys, monkeypatch):
    spec = obj.ObjectiveSpec("half", HalfELBO, "half the ELBO", discrete_latents=False)
    monkeypatch.setitem(obj.OBJECTIVES, "half", spec)
    assert any(line.startswith("half") for line in obj.describe())
    assert main(["train", "vae", "--objective", "half", "--dataset", "digits", "--latent-dim",
                 "3", "--hidden", "16", "--epochs", "1", "--eval-samples", "50",
                 "--no-progress", "--out", str(tmp_path / "h")]) == 0
    assert json.loads((tmp_path / "h" / "metrics.json").read_text())["objective"] == "half"
    with pytest.raises(ConfigError, match="--free-bits works with the trace and meanfield"):
        TrainConfig(objective="half", free_bits=0.5)


def test_metric_declarations_drive_the_summary():
    assert set(METRICS) >= {"test_elbo", "test_log_likelihood", "active_units", "mig"}
    rows = dict(summary_rows({"epochs": 3, "test_elbo": -1.5, "test_iwae": -1.25, "iwae_k": 5,
                              "test_log_likelihood": -1.0, "test_log_likelihood_stderr": 0.1,
                              "ll_num_samples": 10}))
    assert rows == {"epochs": "3", "test ELBO": "-1.500", "test L_5": "-1.250",
                    "test log p(x) [10 samples]": "-1.000 +- 0.100"}
    with pytest.raises(ConfigError, match="undeclared metric"):
        check_keys({"test_elbo": 1.0, "my_new_number": 2.0})


@dataclass
class _Typed:
    hidden: int = 3
    widths: tuple[int, ...] = (4,)
    rate: float | None = None
    flag: bool = False


@pytest.mark.parametrize("name,text,value", [
    ("hidden", "7", 7), ("widths", "3,2", (3, 2)), ("rate", "none", None),
    ("rate", "0.5", 0.5), ("flag", "yes", True)])
def test_each_setting_is_parsed_by_its_own_type(name, text, value):
    from pyro_vae.settings import setting_fields

    setting = {s.name: s for s in setting_fields(_Typed)}[name]
    assert parse_text(setting, text) == value
    with pytest.raises(ConfigError):
        parse_text(setting, "x,y")
    assert coerce(Setting("widths", tuple[int, ...], ()), [1, 2]) == (1, 2)
    with pytest.raises(ConfigError, match="expects int"):
        coerce(Setting("hidden", int, 3), 2.5)


def test_resume_from_python_restates_model_and_data_settings(tmp_path):
    """The run layer itself refuses a changed model or data setting (the CLI only passes the
    flags on): restating the same values, in any spelling the config types, is fine."""
    run(_config(), tmp_path / "r", progress=False)
    for kwargs, message in ((dict(dataset="mnist-5k"), "--dataset mnist-5k differs"),
                            (dict(model_settings={"hidden": [8]}), "--hidden 8 differs"),
                            (dict(model="linear"), "this run is of model vae, not linear")):
        with pytest.raises(ConfigError, match=message):
            resume(tmp_path / "r", epochs=2, progress=False, **kwargs)
    result = resume(tmp_path / "r", epochs=2, progress=False, model="vae", dataset="digits",
                    model_settings={"hidden": [16], "latent_dim": 3})
    assert result.metrics["epochs"] == 2
