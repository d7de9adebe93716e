"""Host reads per step of the fast engine: none after the first step for the reparameterized
objectives (each read is a GPU synchronisation on CUDA; counted here on the CPU).

A read is an aten op that hands a tensor's value to Python: ``_local_scalar_dense`` (what
``.item()``, ``float()``, ``int()`` and ``bool()`` of a tensor call), ``is_nonzero``,
``equal``. ``python tests/test_host_reads.py`` prints the count of every case, the reported
ones (enum, tracegraph) included.
"""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_vae import objectives
from pyro_vae.annealing import kl_weight, scaled_programs
from pyro_vae.data import load_dataset
from pyro_vae.engine import make_stepper
from pyro_vae.graphs import HostReads
from pyro_vae.models import build_model
from pyro_vae.runtime import set_seed
from pyro_vae.train import TrainConfig, train

VAE = ("vae", {"latent_dim": 4, "hidden": (16,)}, "digits")
CASES = {  # id: (model, model settings, data set, train settings)
    "vae-trace": (*VAE, {}),
    "vae-meanfield": (*VAE, {"objective": "meanfield"}),
    "vae-iwae": (*VAE, {"objective": "iwae", "num_particles": 3}),
    "vae-iwae-dreg": (*VAE, {"objective": "iwae-dreg", "num_particles": 3}),
    "vae-vimco": (*VAE, {"objective": "vimco", "num_particles": 3}),
    "vae-free-bits": (*VAE, {"free_bits": 0.5}),
    "vae-meanfield-free-bits": (*VAE, {"objective": "meanfield", "free_bits": 0.5}),
    "vae-kl-warmup": (*VAE, {"kl_warmup_epochs": 2, "beta": 0.5}),
    "cvae-trace": ("cvae", {"latent_dim": 4, "hidden": (16,)}, "digits", {}),
    "hvae-trace": ("hvae", {"latent_dims": (4, 2), "hidden": (16, 8)}, "digits", {}),
    "ae-trace": ("ae", {"latent_dim": 4, "hidden": (16,)}, "digits", {}),
    "bernoulli-trace": ("bernoulli", {"latent_dim": 8}, "digits", {}),  # score function
    "vae-rws": (*VAE, {"objective": "rws", "num_particles": 3}),
}
REPORTED = {  # not asserted: Pyro's own code reads these back
    # pyro.infer.util.compute_expectation (in traceenum_elbo._compute_dice_elbo) tests
    # ``mask.all()`` once per cost term: 3 a step for gmm
    "gmm-enum": ("gmm", {"num_components": 3}, "gmm-2d", {"objective": "enum"}),
    # svi engine (Pyro's SVI object: TraceGraph_ELBO.loss_and_grads, warn_if_nan/inf in
    # Trace.compute_log_prob, per-parameter torch.optim.Adam): 16 a step
    "bernoulli-tracegraph": ("bernoulli", {"latent_dim": 8}, "digits",
                             {"objective": "tracegraph"}),
}


def reads_per_step(case: tuple, steps: int = 4) -> tuple[float, list[str]]:
    """Mean host reads per step of ``stepper.step`` over steps 2..``steps``+1, as ``train``
    runs them (KL weight set between steps, the loss kept on the device)."""
    name, settings, dataset, overrides = case
    set_seed(0)
    pyro.clear_param_store()
    data = load_dataset(dataset)
    model = build_model(name, data.shape, **settings)
    config = TrainConfig(epochs=4, batch_size=32, **overrides)
    spec = objectives.get_spec(config.objective)
    elbo = objectives.build_objective(config, model)
    model_fn, guide_fn, kl_scale = scaled_programs(model, model.latent_sites, config.beta)
    stepper = make_stepper(config.engine, model_fn, guide_fn, elbo, lr=config.lr,
                           eps=config.adam_eps, optim_args=spec.optim_args(config))
    init = getattr(model, "init_from_data", None)
    if init is not None:
        init(data.train_x)
    nb = data.num_batches(config.batch_size)
    batches = data.batches(config.batch_size)
    x, y = next(batches)
    kl_scale.weight = kl_weight(config.beta, config.kl_warmup_epochs, 0, 0, nb)
    stepper.step(x, y, num_data=data.num_train)  # the first step: discovery, validation
    counter = HostReads()
    for step in range(1, steps + 1):
        x, y = next(batches)
        kl_scale.weight = kl_weight(config.beta, config.kl_warmup_epochs, 0, step, nb)
        with counter:
            stepper.step(x, y, num_data=data.num_train)
    return counter.count / steps, counter.ops


@pytest.mark.parametrize("case", list(CASES))
def test_no_host_reads_after_the_first_step(case):
    count, ops = reads_per_step(CASES[case])
    assert count == 0, f"{case}: {count} host reads per step ({sorted(set(ops))})"


def test_the_counter_sees_reads():
    with HostReads() as counter:
        t = torch.ones(3)
        t.sum().item()
        float(t[0])
        bool(t.any())
    assert counter.count == 3


def test_the_loop_reads_the_loss_for_the_guard_only():
    """``train`` on the CPU, progress off: one read per step (the NaN guard: on the CPU it reads
    every step, on a GPU every ``GPU_CHECK_EVERY`` steps) and one per epoch (the epoch's mean);
    the progress bar adds none. Counted as the difference between two and one epochs."""
    def reads(epochs: int) -> int:
        set_seed(0)
        pyro.clear_param_store()
        data = load_dataset("digits")
        model = build_model("vae", data.shape, latent_dim=2, hidden=(8,))
        with HostReads() as counter:
            train(model, data, TrainConfig(epochs=epochs, batch_size=16), progress=False,
                  hooks=[])
        return counter.count, data.num_batches(16)

    (one, nb), (two, _) = reads(1), reads(2)
    assert nb > 50  # the bar would have read the loss at step 0 and 50
    assert two - one == nb + 1


if __name__ == "__main__":  # the table of the report
    for key, case in {**CASES, **REPORTED}.items():
        count, ops = reads_per_step(case)
        print(f"{key:<26} {count:5.2f}  {sorted(set(ops))}")
