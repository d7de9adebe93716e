"""Does ``torch.compile`` make a training step faster on the CPU? (one thread, vae-mlp)

Issue 13 asks to try ``torch.compile`` of the step on the CPU and to keep it only where it
measures faster. Side by side in one run, on the same model, seed and batches as
``benchmarks/speed.py``'s vae-mlp (the fused-Adam step of each row):

* ``torch``            hand-written PyTorch, eager;
* ``torch-compiled``   the same loss under ``torch.compile`` (inductor): what compiling can
                       give at best, with no Pyro in the way;
* ``pyro_vae``         the fast engine's step, eager;
* ``pyro_vae-nets``    the fast engine with the encoder and decoder networks compiled (Pyro's
                       tracing stays eager);
* ``pyro_vae-loss``    the fast engine's whole loss (``differentiable_loss``: Pyro's tracing,
                       replay and log densities) under ``torch.compile``.

Each row reports its compile (first-steps) time apart from the steady state, the median over
repeats of ms per step, and its ratio to eager hand-written PyTorch; a row that fails to
compile says why::

    python benchmarks/compile_step.py [--batch-size 128] [--steps 60] [--repeats 5]
"""

from __future__ import annotations

import time

import torch
from speed import MODELS, _batches, torch_loss  # benchmarks/ is first on sys.path
from step_breakdown import _ms, parse_args

from pyro_vae import build_model, load_dataset, set_seed
from pyro_vae.engine import make_stepper
from pyro_vae.objectives import make_objective

WARMUP = 3  # steps that compile (and are timed apart)


def _time(step, xs, repeats: int) -> tuple[float, float]:
    """(seconds for the first WARMUP steps, median ms per step over ``repeats`` passes)."""
    t0 = time.perf_counter()
    for x in xs[:WARMUP]:
        step(x)
    return time.perf_counter() - t0, _ms(step, xs, repeats)


def _rows(batch_size: int, steps: int):
    data = load_dataset("mnist-5k")
    name, settings, objective, k = MODELS["vae-mlp"]
    n = data.num_train
    xs = _batches(data, batch_size, steps)

    def hand(compiled: bool):
        set_seed(0)
        model = build_model(name, data.shape, **settings)
        adam = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        loss_fn = torch.compile(torch_loss) if compiled else torch_loss

        def step(x):
            adam.zero_grad(set_to_none=True)
            loss_fn(model, x, n, k).backward()
            adam.step()
        return step

    def ours(variant: str):
        set_seed(0)
        model = build_model(name, data.shape, **settings)
        if variant == "nets":
            model.encoder = torch.compile(model.encoder)
            model.decoder = torch.compile(model.decoder)
        elbo = make_objective(objective, k, max_plate_nesting=model.max_plate_nesting)
        stepper = make_stepper("fast", model.model, model.guide, elbo, lr=1e-3, eps=1e-8,
                               optim_args={"lr": 1e-3})
        if variant == "loss":
            stepper.elbo.differentiable_loss = torch.compile(stepper.elbo.differentiable_loss)

        def step(x):
            stepper.step(x, None, num_data=n)
        return step

    return xs, {"torch": lambda: hand(False), "torch-compiled": lambda: hand(True),
                "pyro_vae": lambda: ours("eager"), "pyro_vae-nets": lambda: ours("nets"),
                "pyro_vae-loss": lambda: ours("loss")}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv, __doc__)
    xs, rows = _rows(args.batch_size, args.steps)
    results: dict[str, dict] = {}
    for label, make in rows.items():
        try:
            warm, ms = _time(make(), xs, args.repeats)
            results[label] = {"compile_s": warm, "ms": ms}
        except Exception as exc:  # a path that does not compile is a result, not a crash
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            results[label] = {"error": f"{type(exc).__name__}: {reason[:150]}"}
    base = results["torch"]["ms"]
    print(f"vae-mlp, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, "
          f"1 thread, torch {torch.__version__}")
    print(f"{'path':16s} {'first 3 steps s':>16s} {'ms/step':>8s} {'/ torch':>8s}")
    for label, r in results.items():
        if "error" in r:
            print(f"{label:16s} failed: {r['error']}")
        else:
            print(f"{label:16s} {r['compile_s']:16.2f} {r['ms']:8.3f} {r['ms'] / base:8.3f}")
    return results


if __name__ == "__main__":
    main()
