"""Where pyro_vae's fast step spends its time beside hand-written PyTorch (one CPU thread).

The same model, seed and batches (``benchmarks/speed.py``'s vae-mlp): the whole step of each
path, then the loss alone (no gradient) and the loss with its backward pass. A third path sits
between the two: the *same* distribution objects the pair builds (``q(z|x)``, ``p(z)``,
``p(x|z)``) and the same Monte Carlo ELBO as Trace_ELBO, ``log p(x|z) + log p(z) - log q(z|x)``
at one draw, computed without Pyro (no tracing, no replay, no param store, no per-site
bookkeeping). So the gap splits into

* Pyro's machinery: pyro_vae minus that path (tracing the guide, replaying the model,
  ``pyro.module``'s parameter registration, the traces' per-site log densities and sums);
* the estimator: that path minus the hand-written loss (two Gaussian log densities and a
  sampled KL where the hand-written loss has the KL in closed form);
* the optimizer: each path's fused Adam timed alone on the gradients of one step::

    python benchmarks/step_breakdown.py [--batch-size 128] [--steps 60] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from speed import MODELS, _batches, torch_loss  # benchmarks/ is first on sys.path

from pyro_vae import build_model, load_dataset, set_seed
from pyro_vae.engine import make_stepper
from pyro_vae.objectives import make_objective


def _ms(fn, xs, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in xs:
            fn(x)
        times.append((time.perf_counter() - t0) / len(xs) * 1e3)
    return statistics.median(times)


def parse_args(argv: list[str] | None, doc: str) -> argparse.Namespace:
    """The one-thread step benchmarks' flags (this one's and ``compile_step.py``'s); sets
    torch to one thread."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv, __doc__)
    data = load_dataset("mnist-5k")
    name, settings, objective, k = MODELS["vae-mlp"]
    n = data.num_train

    set_seed(0)
    hand = build_model(name, data.shape, **settings)
    hand.name = "hand"
    adam = torch.optim.Adam(hand.parameters(), lr=1e-3, fused=True)
    set_seed(0)
    ours = build_model(name, data.shape, **settings)
    elbo = make_objective(objective, k, max_plate_nesting=ours.max_plate_nesting)
    stepper = make_stepper("fast", ours.model, ours.guide, elbo, lr=1e-3, eps=1e-8,
                           optim_args={"lr": 1e-3})

    def hand_step(x):
        adam.zero_grad(set_to_none=True)
        torch_loss(hand, x, n, k).backward()
        adam.step()

    def hand_loss(x):
        with torch.no_grad():
            torch_loss(hand, x, n, k)

    def hand_backward(x):
        torch_loss(hand, x, n, k).backward()
        hand.zero_grad(set_to_none=True)

    def our_step(x):
        stepper.step(x, None, num_data=n)

    def our_loss(x):
        with torch.no_grad():
            stepper.elbo.differentiable_loss(stepper.model_fn, stepper.guide_fn, x, None,
                                             num_data=n)

    def bare_loss(x):  # the pair's own distributions, Trace_ELBO's estimate, no Pyro
        q = ours.q(x)
        z = q.rsample()
        log_w = (ours._likelihood(ours.decoder(z)).log_prob(x) + ours.prior_dist(x).log_prob(z)
                 - q.log_prob(z))
        return -log_w.sum() * (n / x.shape[0])

    def bare_fwd(x):
        with torch.no_grad():
            bare_loss(x)

    def bare_backward(x):
        bare_loss(x).backward()
        ours.zero_grad(set_to_none=True)

    bare_adam = torch.optim.Adam(ours.parameters(), lr=1e-3, fused=True)

    def bare_step(x):
        bare_adam.zero_grad(set_to_none=True)
        bare_loss(x).backward()
        bare_adam.step()

    def our_backward(x):
        stepper.elbo.differentiable_loss(stepper.model_fn, stepper.guide_fn, x, None,
                                         num_data=n).backward()
        ours.zero_grad(set_to_none=True)

    xs = _batches(data, args.batch_size, args.steps)
    for x in xs[:5]:  # first steps: parameter discovery, validation, allocator warm-up
        hand_step(x)
        our_step(x)
    rows = {}  # all without Pyro's and torch's argument validation, as train runs every step
    # after the first (the bare path trains the same parameters with its own Adam)
    for label, a, m, b in (("whole step", our_step, bare_step, hand_step),
                           ("loss, no gradient (forward)", our_loss, bare_fwd, hand_loss),
                           ("loss and backward", our_backward, bare_backward, hand_backward)):
        with pyro.validation_enabled(False):
            rows[label] = tuple(_ms(f, xs, args.repeats) for f in (a, m, b))
    # the optimizer alone: each path's fused Adam stepping on gradients left by one backward
    steps = []
    for backward, opt in ((our_step, stepper.optimizer), (bare_step, bare_adam),
                          (hand_step, adam)):
        backward(xs[0])  # leaves this path's gradients in place (zeroed only before a step)
        steps.append(_ms(lambda x, opt=opt: opt.step(), xs, args.repeats))
    rows["optimizer step alone"] = tuple(steps)
    print(f"vae-mlp, batch {args.batch_size}, one CPU thread, ms per step (median of "
          f"{args.repeats} x {args.steps} steps)")
    print("| part | pyro_vae | same distributions, no Pyro | hand-written, fused Adam "
          "| Pyro's machinery | the estimator | pyro_vae / hand-written |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, (a, m, b) in rows.items():
        print(f"| {label} | {a:.3f} | {m:.3f} | {b:.3f} | {a - m:+.3f} | {m - b:+.3f} "
              f"| {a / b:.3f} |")
    return {label: a / b for label, (a, m, b) in rows.items()}


if __name__ == "__main__":
    main()
