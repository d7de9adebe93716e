"""The ``pyro-vae`` command: train, evaluate, sample, list, diagnose.

Every error a user can cause ends as one line on stderr and exit status 2; nothing already
written is damaged (files are replaced atomically).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from pyro_vae import __version__
from pyro_vae.annealing import migrate_legacy_beta
from pyro_vae.data import BINARIZATIONS, DATASETS, load_dataset
from pyro_vae.errors import ConfigError, RunFolderError, UserError, check_positive
from pyro_vae.evaluate import check_num_samples, disentanglement, evaluate
from pyro_vae.latent_plots import KINDS as LATENT_PICTURES
from pyro_vae.latent_plots import save_latent_picture, save_latent_pictures
from pyro_vae.models import MODELS, build_model, get_model_class
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.plots import save_label_samples, save_run_pictures, save_samples
from pyro_vae.runs import RunFolder, load_trained
from pyro_vae.runtime import resolve_device, set_seed
from pyro_vae.train import TrainConfig, check_data, train

log = logging.getLogger("pyro_vae")

RESUMABLE = {"epochs", "device", "engine"}  # settings a resumed run may change


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"pyro-vae: error: {message} (see {self.prog} --help)\n")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas (e.g. 200,200),"
                                         f" got {text!r}") from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


MODEL_HELP = {
    "latent_dim": "latent dimensions",
    "hidden": "hidden layer sizes, e.g. 400 or 200,200",
    "activation": "relu, tanh, softplus or elu",
    "likelihood": "bernoulli (binary data) or gaussian",
    "layers": "stochastic layers of Bernoulli latents, 1 or 2",
    "arch": "mlp or conv encoder/decoder",
    "latent_dims": "units of each stochastic layer, z1 first, e.g. 100,50",
    "parameterization": "hvae guide: iwae (bottom-up) or residual (NVAE, top-down)",
    "task": "cvae: label (generate by class) or quadrants (complete an image)",
    "num_classes": "cvae label task: number of classes",
    "observed_quadrants": "cvae quadrant task: 1, 2 or 3 observed quadrants",
    "init": "vae/hvae: torch (PyTorch's default) or iwae (Glorot weights, zero biases, decoder "
            "bias at the training data's mean pixel, as the IWAE paper's code)",
}


def _model_settings() -> dict[str, tuple[type | None, str]]:
    """Every field of every registered model's config: the CLI's model flags.

    A new model's settings become ``--flags`` without touching this file."""
    settings: dict[str, tuple[type | None, str]] = {}
    train_fields = {f.name for f in fields(TrainConfig)}  # e.g. beta: a training setting
    for name, cls in MODELS.items():
        for f in fields(cls.config_class):
            if f.name in train_fields:
                continue
            parse, defaults = settings.get(f.name, (None, ""))
            if parse is None:
                kind = type(f.default)
                parse = {tuple: _int_tuple, bool: _bool}.get(kind, kind)
            shown = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            defaults += f"{', ' if defaults else ''}{name} {shown}"
            settings[f.name] = (parse, defaults)
    return settings


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyro-vae", description="Latent-variable models as Pyro model/guide pairs.")
    p.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model by SVI (a run folder holds the results)")
    t.add_argument("model", nargs="?", help=f"one of: {', '.join(MODELS)}")
    t.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default mnist-5k)")
    t.add_argument("--binarize", choices=BINARIZATIONS,
                   help="dynamic (default for images), fixed or none")
    d = TrainConfig()
    t.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    t.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    t.add_argument("--lr", type=float, help=f"Adam learning rate, default {d.lr}")
    t.add_argument("--adam-eps", type=float, help=f"Adam epsilon, default {d.adam_eps}")
    t.add_argument("--seed", type=int, help=f"seeds torch, Pyro, NumPy; default {d.seed}")
    t.add_argument("--device", help="auto (CUDA when present), cpu or cuda; default auto")
    t.add_argument("--objective", help=f"one of: {', '.join(OBJECTIVES)}; default: the model's "
                   "own (enum for gmm, tracegraph for bernoulli, trace otherwise)")
    t.add_argument("--num-particles", type=int, help="samples per data point (IWAE's K)")
    t.add_argument("--jit", action="store_const", const=True,
                   help="use Pyro's jit variant of the objective")
    t.add_argument("--engine", help="fast (default: one fused Adam, no per-step host reads) or "
                   "svi (Pyro's SVI object); same results, see docs/benchmarks.md")
    t.add_argument("--lr-schedule", help="constant (default) or iwae (Burda et al.: stage i "
                   "lasts 3^i epochs at lr * 10^(-i/7))")
    t.add_argument("--baseline", help="tracegraph's score-function baseline: none, decaying or "
                   "neural (default none)")
    t.add_argument("--baseline-lr", type=float,
                   help=f"Adam learning rate of the neural baseline, default {d.baseline_lr}")
    t.add_argument("--beta", type=float, help="KL weight (beta-VAE), default 1; evaluation "
                   "always uses 1")
    t.add_argument("--kl-warmup-epochs", type=int,
                   help="ramp the KL weight linearly from 0 to beta over these epochs (0)")
    t.add_argument("--free-bits", type=float,
                   help="minimum KL per latent dimension in nats (0: off; trace or meanfield)")
    for key, (parse, defaults) in _model_settings().items():
        help_text = f"{MODEL_HELP.get(key, 'model setting')} (default: {defaults})"
        t.add_argument(f"--{key.replace('_', '-')}", dest=f"model_{key}", type=parse,
                       metavar=key.upper(), help=help_text)
    t.add_argument("--out", type=Path, help="run folder (default runs/MODEL-DATASET-TIME)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    t.add_argument("--eval-samples", type=int, default=5000,
                   help="importance samples for the final log p(x); 0 skips it (default 5000)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="bounds on log p(x), active units, KL per dimension")
    e.add_argument("run", type=Path, help="a run folder")
    e.add_argument("--num-samples", type=int, default=5000, help="importance samples (5000)")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="draw new data from a trained run's prior")
    s.add_argument("run", type=Path, help="a run folder")
    s.add_argument("--num", type=int, default=64, help="how many (default 64)")
    s.add_argument("--out", type=Path, required=True, help="PNG file to write")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--label", type=int,
                   help="draw every image of this class (conditional models such as cvae)")

    pl = sub.add_parser("plot", help="latent interpolation, traversal or 2-D latent map")
    pl.add_argument("run", type=Path, help="a run folder")
    pl.add_argument("--kind", required=True, choices=LATENT_PICTURES)
    pl.add_argument("--out", type=Path, required=True, help="PNG file to write")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--device", default="auto")

    sub.add_parser("list", help="the registered models, objectives and data sets")

    g = sub.add_parser("diagnose", help="ArviZ diagnostics of a run's guide: NetCDF, PSIS "
                       "k-hat per point, NUTS reference for one point, PNG plots")
    g.add_argument("run", type=Path, help="a run folder")
    g.add_argument("--points", type=int, default=200, help="test points (default 200)")
    g.add_argument("--draws", type=int, default=1000, help="guide draws per point (1000)")
    g.add_argument("--ppc-draws", type=int, default=20,
                   help="posterior predictive draws kept in the NetCDF file (20)")
    g.add_argument("--nuts-point", type=int, default=0, help="test point of the NUTS reference")
    g.add_argument("--nuts-samples", type=int, default=500, help="NUTS draws per chain (500)")
    g.add_argument("--nuts-warmup", type=int, default=300, help="NUTS warm-up steps (300)")
    g.add_argument("--chains", type=int, default=2, help="NUTS chains, run in turn (2)")
    g.add_argument("--no-nuts", action="store_true", help="skip the NUTS reference")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto")
    return p


def _train_config(args, base: dict | None = None) -> TrainConfig:
    values = dict(base or {})
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            if base is not None and f.name not in RESUMABLE and given != base.get(f.name):
                raise ConfigError(f"--{f.name.replace('_', '-')} {given} differs from the run's "
                                  f"{base.get(f.name)}; a resumed run keeps its settings")
            values[f.name] = given
    return TrainConfig(**values)


def _cmd_train(args) -> int:
    if args.eval_samples < 0:
        raise ConfigError(f"--eval-samples must be >= 0, got {args.eval_samples}")
    if args.eval_samples:  # fail on a bad number now, not after training
        check_num_samples(args.eval_samples)
    model_settings = {k[len("model_"):]: v for k, v in vars(args).items()
                      if k.startswith("model_") and v is not None}
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        run = RunFolder(args.out)
        saved = run.read_config()
        saved = migrate_legacy_beta(saved, [f.name for f in fields(
            get_model_class(saved["model"]).config_class)])
        if args.model and args.model != saved["model"]:
            raise ConfigError(f"{args.out} is a run of {saved['model']}, not {args.model}")
        if model_settings or args.dataset or args.binarize:
            raise ConfigError("a resumed run keeps its model and data settings; pass only "
                              "--epochs or --device")
        if not run.has_checkpoint():
            raise RunFolderError(f"{args.out} has no checkpoint to resume from")
        config = _train_config(args, saved["train"])
        name, dataset, binarize = saved["model"], saved["dataset"], saved.get("binarize")
        model_settings = saved.get("model_config", {})
    else:
        if not args.model:
            raise ConfigError(f"name a model to train: {', '.join(MODELS)}")
        config = _train_config(args)
        name, dataset, binarize = args.model, args.dataset or "mnist-5k", args.binarize
        get_model_class(name)  # an unknown name fails before any data is loaded
        if args.objective is None:
            objective = get_model_class(name).default_objective
            config = TrainConfig(**{**asdict(config), "objective": objective})
        out = args.out or Path("runs") / f"{name}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = RunFolder(out)
        if run.has_checkpoint():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or "
                              "choose another --out")
        if run.is_run():  # a run stopped before its first checkpoint: nothing to lose
            log.warning("%s holds a run that never reached a checkpoint; starting it over", out)
    device = resolve_device(config.device)
    set_seed(config.seed)
    data = load_dataset(dataset, binarize=binarize, device=device)
    model = build_model(name, data.shape, **model_settings)
    model.to(device)
    check_data(model, data)
    run_config = {
        "model": name, "model_config": model.config_dict(), "dataset": dataset,
        "binarize": data.binarize, "train": asdict(config), "eval_samples": args.eval_samples,
        "pyro_vae_version": __version__,
    }
    if not args.resume:  # a resumed run's config changes only once its checkpoint has loaded
        run.write_config(run_config)
    log.info("training %s on %s (%s, %d points) on %s -> %s", name, dataset, data.binarize,
             data.num_train, device, run.path)
    result = train(model, data, config, run, resume=args.resume,
                   progress=not args.no_progress)
    if args.resume:
        run.write_config(run_config)
    y_test = data.test_y if model.is_conditional else None
    metrics = {"model": name, "dataset": dataset, "binarize": data.binarize,
               "objective": config.objective, "num_particles": config.num_particles,
               "epochs": result.epochs, "seconds": round(result.seconds, 2),
               "device": str(device), "train_elbo": result.train_elbo, "beta": config.beta,
               "kl_warmup_epochs": config.kl_warmup_epochs, "free_bits": config.free_bits,
               "final_kl_weight": result.history[-1].get("kl_weight") if result.history
               else None}
    if args.eval_samples:
        metrics |= evaluate(model, data.test_x, y_test, num_samples=args.eval_samples,
                            progress=not args.no_progress)
    metrics |= disentanglement(model, data)
    metrics = run.update_metrics(metrics)
    save_run_pictures(model, data, run.path, result.history)
    save_latent_pictures(model, data, run.path)
    _print_summary(run, metrics)
    return 0


def _print_summary(run: RunFolder, m: dict) -> None:
    rows = [("epochs", m.get("epochs")), ("seconds", m.get("seconds")),
            ("train ELBO", m.get("train_elbo")), ("test ELBO", m.get("test_elbo"))]
    if "test_iwae" in m:
        rows.append((f"test L_{m['iwae_k']}", m["test_iwae"]))
    if "mig" in m:
        rows.append(("MIG (known factors)", m["mig"]))
    if "test_log_likelihood" in m:
        rows.append((f"test log p(x) [{m['ll_num_samples']} samples]",
                     f"{m['test_log_likelihood']:.3f} +- {m['test_log_likelihood_stderr']:.3f}"))
        rows.append(("active units", f"{m['active_units']} of {len(m['kl_per_dim'])}"
                     if m.get("kl_is_per_dim") else m["active_units"]))
    print(f"run: {run.path}")
    for label, value in rows:
        value = f"{value:.3f}" if isinstance(value, float) else value
        print(f"  {label:<32} {value}")


def _cmd_evaluate(args) -> int:
    device = resolve_device(args.device)
    model, data, config, _ = load_trained(args.run, device)
    set_seed(0)
    y_test = data.test_y if model.is_conditional else None
    metrics = evaluate(model, data.test_x, y_test, num_samples=args.num_samples,
                       progress=not args.no_progress)
    metrics |= disentanglement(model, data)
    run = RunFolder(args.run)
    merged = run.update_metrics(metrics)
    _print_summary(run, merged)
    return 0


def _cmd_sample(args) -> int:
    check_positive("--num", args.num)
    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {args.out}")
    device = resolve_device(args.device)
    model, data, _, _ = load_trained(args.run, device)
    set_seed(args.seed)
    if args.label is not None:
        check_label(model, args.label)
        print(save_label_samples(model, args.out, args.label, num=args.num))
        return 0
    path = save_samples(model, args.out, num=args.num, reference=data.test_x)
    print(path)
    return 0


def _cmd_plot(args) -> int:
    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {args.out}")
    device = resolve_device(args.device)
    model, data, _, _ = load_trained(args.run, device)
    set_seed(args.seed)
    print(save_latent_picture(model, data, args.kind, args.out))
    return 0


def check_label(model, label: int) -> None:
    """Raise :class:`ConfigError` unless ``model`` generates by class and ``label`` is one."""
    classes = getattr(model, "num_classes", None) if model.is_conditional else None
    if not classes:
        raise ConfigError(f"--label needs a class-conditional model (cvae with --task label); "
                          f"this run's model {model.name} is not one")
    if not 0 <= label < classes:
        raise ConfigError(f"--label must be a class in 0..{classes - 1}, got {label}")


def _cmd_list(args) -> int:
    print("models:     " + ", ".join(MODELS))
    print("objectives: " + ", ".join(OBJECTIVES))
    print("data sets:  " + ", ".join(DATASETS))
    return 0


def _cmd_diagnose(args) -> int:
    from pyro_vae.diagnostics import diagnose  # its load_trained refuses a folder that is not
    # a run or has no checkpoint, with one line, before any work

    m = diagnose(args.run, points=args.points, draws=args.draws, ppc_draws=args.ppc_draws,
                 nuts=not args.no_nuts, nuts_point=args.nuts_point,
                 nuts_samples=args.nuts_samples, nuts_warmup=args.nuts_warmup,
                 chains=args.chains, seed=args.seed, device=resolve_device(args.device))
    print(f"run: {args.run}")
    print(f"  k-hat over {m['diagnose_points']} points: {m['khat_good']} good (<0.5), "
          f"{m['khat_ok']} usable, {m['khat_bad']} poor (>0.7); max {m['khat_max']}")
    if "nuts_rhat_max" in m:
        print(f"  NUTS on point {m['nuts_point']}: max R-hat {m['nuts_rhat_max']:.3f}, min bulk "
              f"ESS {m['nuts_ess_bulk_min']:.0f}; guide sd / NUTS sd "
              f"{m['nuts_vs_guide_sd_ratio_mean']:.2f} on average")
    print(f"  wrote posterior.nc, {', '.join(m['diagnose_plots'])} and metrics.json")
    return 0


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "sample": _cmd_sample,
            "list": _cmd_list, "plot": _cmd_plot}
COMMANDS["diagnose"] = _cmd_diagnose


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"pyro-vae: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyro-vae: interrupted; the last finished epoch's checkpoint is kept "
              "(continue with --resume)", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError:
        print("pyro-vae: error: out of GPU memory; use a smaller --batch-size or "
              "--device cpu", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
