"""Semi-supervised classification with N labels per class: raw pixels, M1, M2 and M1+M2 (Kingma
et al. 2014), over several seeds.

    python examples/semi_supervised.py                        # mnist-5k, 10 labels per class
    python examples/semi_supervised.py --dataset digits --epochs 2 --seeds 0

For each seed s the data keep the labels of ``--labels-per-class`` training points of each
class (``--label-seed s``: the labelled points change with the seed too) and:

* **pixels**: scikit-learn classifiers (``--classifiers``: logistic regression and an RBF
  SVC) on the raw pixels of the labelled points;
* **M1**: a plain ``vae`` trained without labels on every training image (run folder
  ``--out/vae-s``), the same classifiers on the guide's means of the labelled points;
* **M2**: the ``ssvae`` trained on the labelled and unlabelled points together (``--out/m2-s``),
  its own classifier q(y | x) (``test_accuracy`` of its ``metrics.json``);
* **M1+M2**: the ``ssvae`` with a Gaussian likelihood trained on M1's codes
  (:func:`pyro_vae.semi_supervised.export_codes` writes them to ``--out/codes-s.npz`` with the
  vae's own split; the same labelled points), its q(y | z1) (``--out/m1m2-s``; settings
  ``--m1m2-*``).

All are scored on the whole test split. ``--reuse`` takes the finished runs already in
``--out`` (the same settings) instead of training them again: seeds run as separate commands
side by side, then one command prints the table. Prints the table (each seed, mean and standard
deviation over the seeds) and writes ``--out/analogies.png`` (M2 of the first seed: each row a
test digit, then its style z decoded with every class 0..C-1) and ``--out/classes.png`` (rows:
classes, z ~ p(z)). Each model is a run of the run layer (:func:`pyro_vae.run`).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from pyro_vae import EvalConfig, RunConfig, open_run, run
from pyro_vae.cli import run_script
from pyro_vae.errors import ConfigError, check_choice
from pyro_vae.plots import save_class_grid, save_grid
from pyro_vae.runner import RunResult
from pyro_vae.semi_supervised import CLASSIFIERS, export_codes, latent_accuracy, pixel_accuracy


def _config(model: str, args, seed: int, **settings) -> RunConfig:
    return RunConfig.for_model(
        model, dataset=args.dataset, hidden=(args.hidden,), latent_dim=args.latent_dim,
        data={"labels_per_class": args.labels_per_class, "label_seed": seed},
        train={"epochs": args.epochs, "seed": seed, "device": args.device,
               "batch_size": args.batch_size},  # a dict: the model's default objective
        eval=EvalConfig(num_samples=0, pictures=False), **settings)


def _m1m2_config(codes: Path, args, seed: int) -> RunConfig:
    """M2 on the codes: Gaussian likelihood, its own network sizes, the same labelled points."""
    return RunConfig.for_model(
        "ssvae", dataset=str(codes.resolve()), hidden=(args.m1m2_hidden,),
        latent_dim=args.m1m2_latent_dim, aux_weight=args.m1m2_aux_weight, likelihood="gaussian",
        data={"labels_per_class": args.labels_per_class, "label_seed": seed},
        train={"epochs": args.m1m2_epochs or args.epochs, "seed": seed, "device": args.device,
               "batch_size": args.batch_size},
        eval=EvalConfig(num_samples=0, pictures=False))


def _run(config: RunConfig, out: Path, reuse: bool) -> RunResult:
    """A new run into ``out``; with ``--reuse``, the finished run already there when it was
    made with the same model, data and training settings (else one line, exit 2)."""
    if not (reuse and (out / "metrics.json").is_file()):
        return run(config, out, progress=False)
    opened = open_run(out)
    saved, asked = opened.config.to_json(), config.to_json()
    for key in ("model", "model_config", "dataset", "data", "train"):
        if saved.get(key) != asked.get(key):
            raise ConfigError(f"{out} holds a run of other {key.replace('_', ' ')} settings; "
                              "drop --reuse or choose another --out")
    return RunResult(opened, None, opened.folder.read_metrics())


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--epochs", type=int, default=30, help="epochs of M2 and of M1's vae")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--aux-weight", type=float, default=1500.0,
                   help="M2's weight on log q(y|x) of each labelled point")
    p.add_argument("--m1m2-hidden", type=int, default=256, help="M1+M2: M2's hidden units")
    p.add_argument("--m1m2-latent-dim", type=int, default=32, help="M1+M2: M2's z2 size")
    p.add_argument("--m1m2-aux-weight", type=float, default=300.0,
                   help="M1+M2: weight on log q(y|z1) of each labelled point")
    p.add_argument("--m1m2-epochs", type=int, default=0,
                   help="M1+M2: epochs of M2 on the codes (0: --epochs)")
    p.add_argument("--classifiers", default="logistic,svc",
                   help=f"shallow classifiers of pixels and M1, comma-separated: "
                        f"{', '.join(CLASSIFIERS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/example-semi-supervised"))
    p.add_argument("--reuse", action="store_true",
                   help="take finished runs already in --out (same settings) instead of "
                        "training them again, e.g. seeds trained by separate commands")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    kinds = args.classifiers.split(",")
    for kind in kinds:
        check_choice("classifier", kind, CLASSIFIERS)
    table: dict[str, list[float]] = {f"pixels, {k}": [] for k in kinds}
    table |= {f"M1 (vae), {k}": [] for k in kinds} | {"M2 (ssvae) q(y|x)": []}
    table |= {"M1+M2 q(y|z1)": []}
    for seed in seeds:
        m2 = _run(_config("ssvae", args, seed, aux_weight=args.aux_weight),
                  args.out / f"m2-{seed}", args.reuse)
        vae = _run(_config("vae", args, seed), args.out / f"vae-{seed}", args.reuse)
        data = vae.run.data
        for kind in kinds:
            table[f"pixels, {kind}"].append(pixel_accuracy(data, kind, seed))
            table[f"M1 (vae), {kind}"].append(latent_accuracy(vae.run.model, data, kind, seed))
        table["M2 (ssvae) q(y|x)"].append(m2.metrics["test_accuracy"])
        codes = export_codes(vae.run, args.out / f"codes-{seed}.npz")
        m1m2 = _run(_m1m2_config(codes, args, seed), args.out / f"m1m2-{seed}", args.reuse)
        table["M1+M2 q(y|z1)"].append(m1m2.metrics["test_accuracy"])
        if seed == seeds[0]:
            model = m2.run.model.eval()
            x = data.test_x[torch.linspace(0, len(data.test_x) - 1, 10).long()]
            rows = torch.cat([x.unsqueeze(1), model.analogies(x)], 1)
            save_grid(rows.flatten(0, 1), args.out / "analogies.png", nrow=rows.shape[1])
            torch.manual_seed(seed)
            save_class_grid(model, args.out / "classes.png")

    print(f"test accuracy on {args.dataset}, {args.labels_per_class} labels per class, "
          f"seeds {','.join(map(str, seeds))}")
    print(f"{'method':<20}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
          + f"{'mean':>9}{'sd':>8}")
    for name, values in table.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name:<20}" + "".join(f"{v:>9.3f}" for v in values)
              + f"{statistics.mean(values):>9.3f}{sd:>8.3f}")
    print(f"pictures in {args.out}: analogies.png, classes.png")
    return table


if __name__ == "__main__":
    run_script(main, __file__)  # a UserError: one line on stderr, exit 2, as pyro-vae does
