"""Conditional VAE: digits of an asked class, and completing a digit from 1-3 of its quadrants.

    python examples/cvae.py                       # mnist-5k, 50 epochs per model
    python examples/cvae.py --epochs 2 --dataset digits --eval-samples 50 --num-generated 100

1. ``cvae --task label``: p(z) p(x | z, y) with guide q(z | x, y). Writes
   ``class_samples.png`` (row c: ten draws of class c) and scores 1,000 generated images
   (100 per class) with a small classifier trained on the training split
   (``pyro_vae.classifier``): the share labelled as asked.
2. ``cvae --task quadrants``, one model per number of observed quadrants (1, 2, 3): prior
   network p(z | observed), p(missing | z, observed), guide q(z | x). Reports the test
   -log p(missing | observed) by importance sampling beside Pyro's tutorial figures (full
   MNIST), and writes ``completions.png`` (per model: observed part, completion, truth).

Each model is a run of the library's run layer (:func:`pyro_vae.run`) in ``--out/label`` and
``--out/quadrants-Q``, with its pictures; its evaluation (``--eval-samples``, seed ``--seed``)
gives the log-likelihoods above, and ``pyro-vae evaluate/sample/plot`` open the folders. The
classifier's figures are the example's own: ``label.md`` holds them (not ``metrics.json``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pyro_vae import EvalConfig, RunConfig, TrainConfig, run, set_seed
from pyro_vae.classifier import accuracy, conditional_sample_accuracy, train_classifier
from pyro_vae.cli import run_script
from pyro_vae.errors import check_choice
from pyro_vae.plots import save_class_grid, save_grid

PYRO_TUTORIAL_NLL = {1: 71.8, 2: 51.0, 3: 24.2}  # Pyro's CVAE tutorial, full MNIST, nats
TASKS = ("label", "quadrants")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--latent-dim", type=int, default=20, help="quadrant task's latent size")
    p.add_argument("--label-latent-dim", type=int, default=2,
                   help="label task's latent size (a small z leaves the class to y)")
    p.add_argument("--tasks", default="label,quadrants", help="which tasks to run")
    p.add_argument("--arch", default="mlp", help="mlp or conv")
    p.add_argument("--classifier-epochs", type=int, default=10)
    p.add_argument("--num-generated", type=int, default=1000)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-cvae"))
    args = p.parse_args(argv)

    tasks = args.tasks.split(",")
    for task in tasks:
        check_choice("task", task, TASKS)

    def config(**settings) -> RunConfig:
        return RunConfig.for_model(
            "cvae", dataset=args.dataset, arch=args.arch, **settings,
            train=TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device),
            eval=EvalConfig(num_samples=args.eval_samples, iwae_ks=(), seed=args.seed))

    configs = {}  # every model's settings are checked before the first trains
    if "label" in tasks:
        configs["label"] = config(latent_dim=args.label_latent_dim)
    if "quadrants" in tasks:
        for q in (1, 2, 3):
            configs[f"quadrants-{q}"] = config(latent_dim=args.latent_dim, task="quadrants",
                                               observed_quadrants=q)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if "label" in tasks:
        results["label"] = _label_task(args, run(configs["label"], args.out / "label",
                                                 progress=False))
    if "quadrants" in tasks:
        results["quadrants"] = _quadrant_task(args, {
            q: run(configs[f"quadrants-{q}"], args.out / f"quadrants-{q}", progress=False)
            for q in (1, 2, 3)})
    return results


def _label_task(args, result) -> dict:
    """1. label-conditioned generation, judged by a classifier."""
    model, data, m = result.run.model, result.run.data, result.metrics
    save_class_grid(model, args.out / "class_samples.png")
    clf = train_classifier(data, epochs=args.classifier_epochs, seed=args.seed)
    clf_acc = accuracy(clf, data.test_x, data.test_y)
    set_seed(args.seed)
    gen = conditional_sample_accuracy(model, clf, num=args.num_generated)
    print(f"label task: test log p(x | y) {m['test_log_likelihood']:.2f}; the classifier "
          f"labels {gen['accuracy']:.1%} of {gen['num']} generated images as asked "
          f"(its accuracy on the real test split: {clf_acc:.1%})", flush=True)
    (args.out / "label.md").write_text(
        f"test log p(x | y) {m['test_log_likelihood']:.2f} +- "
        f"{m['test_log_likelihood_stderr']:.2f}; generated labelled as asked "
        f"{gen['accuracy']:.1%} of {gen['num']}; per class "
        + ", ".join(f"{c}: {a:.0%}" for c, a in gen["per_class"].items())
        + f"; classifier test accuracy {clf_acc:.1%}\n")
    return {"log_px_given_y": m["test_log_likelihood"], "classifier_test_accuracy": clf_acc,
            **gen}


def _quadrant_task(args, results: dict) -> list[dict]:
    """2. quadrant completion, one model per number of observed quadrants."""
    rows, pictures = [], []
    for q, result in results.items():
        model, data, m = result.run.model, result.run.data, result.metrics
        shown = data.test_x[torch.linspace(0, len(data.test_x) - 1, 8).long().to(data.device)]
        rows.append({"quadrants": q, "nll": -m["test_log_likelihood"],
                     "stderr": m["test_log_likelihood_stderr"], "elbo": m["test_elbo"],
                     "pyro_tutorial": PYRO_TUTORIAL_NLL[q]})
        observed = torch.where(model.observed, shown, torch.full_like(shown, 0.5))
        pictures += [observed, model.reconstruct(shown), shown]
        print(f"{q} observed quadrant(s): -log p(missing | observed) {rows[-1]['nll']:.2f}",
              flush=True)
    save_grid(torch.cat(pictures), args.out / "completions.png", nrow=8)
    table = "\n".join([
        f"| observed quadrants | -log p(missing \\| observed), {args.dataset}, {args.epochs} "
        f"epochs [{args.eval_samples} samples] | Pyro tutorial CVAE (full MNIST) |",
        "| --- | --- | --- |",
        *(f"| {r['quadrants']} | {r['nll']:.1f} +- {r['stderr']:.1f} | {r['pyro_tutorial']} |"
          for r in rows)])
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
