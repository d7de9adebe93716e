"""The ``pyro-vae`` command: train, check, new, evaluate, sample, plot, diagnose, score, list.

A thin front end of the run layer (:mod:`pyro_vae.runner`): it parses flags into a
:class:`~pyro_vae.run_config.RunConfig` and prints what the run layer returns. A model is any
model spec (``vae``, ``my_pkg.models:MyVAE``, ``path/to/file.py:MyVAE``, an entry-point name);
its flags come from its config dataclass, each parsed by the field's own type.

Every error a user can cause -- bad input, a fault in a user's own model code, the file
system, running out of memory -- ends as one line on stderr and exit status 2 (130 for Ctrl-C);
nothing already written is damaged (files are replaced atomically). Informational lines and
warnings go to stdout, so stderr holds the error line alone. A command that writes into a run
folder holds its lock (:meth:`pyro_vae.runs.RunFolder.lock`): a second one is refused. Paths
to write are checked before any work, and a file system error later on (a full disk) names
the file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from pyro_vae import __version__, distributed, runner
from pyro_vae.data import BINARIZATIONS, CHANNELS, DATA_ON, DATASETS
from pyro_vae.errors import ConfigError, UserError, check_positive, check_seed, out_of_memory
from pyro_vae.latent_plots import KINDS as LATENT_PICTURES
from pyro_vae.metrics import format_summary
from pyro_vae.models.registry import available, resolve
from pyro_vae.objectives import OBJECTIVES, describe
from pyro_vae.run_config import DEFAULT_DATASET, EvalConfig, RunConfig
from pyro_vae.runs import check_new_file, file_errors
from pyro_vae.runtime import resolve_device, set_seed
from pyro_vae.settings import parse_text, setting_fields, type_name
from pyro_vae.structure import require_local_latents
from pyro_vae.train import TrainConfig

log = logging.getLogger("pyro_vae")
MODEL_DEST = "model__"  # namespace prefix of model settings


class _FirstPass(Exception):
    """A usage error in the first pass over the arguments (the second pass reports it)."""


class _Parser(argparse.ArgumentParser):
    quiet = False  # set during the first pass: errors are the second pass's to report

    def error(self, message: str):  # one line, exit 2
        if _Parser.quiet:
            raise _FirstPass(message)
        self.exit(2, f"pyro-vae: error: {message} (see {self.prog} --help)\n")


MODEL_HELP = {
    "latent_dim": "latent dimensions",
    "hidden": "hidden layer sizes, e.g. 400 or 200,200",
    "activation": "relu, tanh, softplus or elu",
    "likelihood": "bernoulli (binary data), gaussian, or for 8-bit pixels k/255 logistic "
                  "(discretized logistic) or dequantized (Gaussian)",
    "layers": "stochastic layers of Bernoulli latents, 1 or 2",
    "arch": "mlp or conv encoder/decoder",
    "latent_dims": "units of each stochastic layer, z1 first, e.g. 100,50",
    "parameterization": "hvae guide: iwae (bottom-up) or residual (NVAE, top-down)",
    "task": "cvae: label (generate by class) or quadrants (complete an image)",
    "num_classes": "number of classes (cvae label task, ssvae)",
    "aux_weight": "ssvae: weight of log q(y|x) on each labelled point (Kingma's alpha / N_l)",
    "class_weight": "dbvae: weight of log q(y|x) on each labelled point (the paper's 1/c)",
    "observed_quadrants": "cvae quadrant task: 1, 2 or 3 observed quadrants",
    "init": "torch (PyTorch's default) or iwae (Glorot weights, zero biases, decoder bias at "
            "the training data's mean pixel, as the IWAE paper's code)",
    "codebook_size": "vqvae: K, the codebook's entries",
    "code_dim": "vqvae: D, the dimension of a codebook entry",
    "num_positions": "vqvae --arch mlp: L, code positions per image (conv: the 7x7 grid)",
    "commitment": "vqvae: beta of the commitment term",
    "codebook_update": "vqvae: loss (the codebook term) or ema (moving averages)",
    "ema_decay": "vqvae --codebook-update ema: the moving averages' decay",
    "prior": ("p(z): vae: normal, mog (learned mixture), vamp (VampPrior) or flow; "
              "vqvae: uniform codes or pixelcnn (the prior stage)"),
    "prior_epochs": "vqvae: fit a PixelCNN prior on the codes for N epochs afterwards, "
                    "into OUT/prior (0: none)",
    "prior_channels": "vqvae: channels of the PixelCNN prior",
    "prior_layers": "vqvae: masked convolutions of the PixelCNN prior",
    "prior_components": "mog components or vamp pseudo-inputs",
    "flow_steps": "autoregressive steps of the flow prior",
    "posterior": "vae's q(z|x): diag (Gaussian) or iaf (inverse autoregressive flow)",
    "iaf_steps": "inverse autoregressive steps of the iaf guide",
}
TRAIN_HELP = {
    "epochs": "passes over the training split",
    "batch_size": "full batches per epoch",
    "lr": "Adam learning rate",
    "adam_eps": "Adam epsilon",
    "seed": "seeds torch, Pyro, NumPy",
    "device": "auto (CUDA when present), cpu or cuda",
    "objective": "one of: " + ", ".join(OBJECTIVES) + "; default: the model's own",
    "num_particles": "samples per data point (IWAE's K)",
    "jit": "use Pyro's jit variant of the objective",
    "engine": ("fast (one fused Adam; no host reads per step after the first, except enum's "
               "inside Pyro's TraceEnum_ELBO) or svi (Pyro's SVI object)"),
    "lr_schedule": "constant or iwae (Burda et al.: stage i lasts 3^i epochs at lr*10^(-i/7))",
    "baseline": "tracegraph's score-function baseline: none, decaying or neural",
    "baseline_lr": "Adam learning rate of the neural baseline",
    "beta": "KL weight (beta-VAE); evaluation always uses 1",
    "kl_warmup_epochs": "ramp the KL weight linearly from 0 to beta over these epochs",
    "free_bits": "minimum KL per latent dimension in nats (0: off)",
    "cuda_graphs": ("capture the fast engine's step as a CUDA graph and replay it (CUDA only; "
                    "where it cannot, one log line says why and steps run eagerly; "
                    "docs/devices.md)"),
    "resample": ("DB-VAE's adaptive resampling: none, histogram or aggregate (each epoch drawn "
                 "by latent-density weights of the model at its start)"),
    "resample_alpha": "alpha of the resampling weights 1/(density + alpha): large is uniform",
    "resample_bins": "histogram bins per latent dimension of --resample histogram",
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _seed(text: str) -> int:
    try:
        return check_seed(int(text))
    except (ValueError, UserError):
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2**32-1, got "
                                          f"{text!r}") from None


def _path(text: str) -> Path:
    """A path argument; an empty one is refused (``Path("")`` would be the working folder)."""
    if text == "":
        raise argparse.ArgumentTypeError("an empty path; name a folder or file")
    return Path(text)


def _typed(setting):
    def parse(text: str):
        try:
            return parse_text(setting, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = type_name(setting.type)
    return parse


DATASET_HELP = (f"one of: {', '.join(DATASETS)}; or a folder of PNG/JPEG images (class "
                "sub-folders = labels) or a .npz/.npy file (x, optional y)")
DATA_FLAGS = ("image_size", "channels", "data_on", "labels_per_class", "label_seed")


def _add_data_flags(p: argparse.ArgumentParser, *, default: str | None = None) -> None:
    p.add_argument("--dataset", default=default,
                   help=f"{DATASET_HELP} (default {DEFAULT_DATASET})")
    p.add_argument("--binarize", choices=BINARIZATIONS,
                   help="dynamic (default for grey images), fixed or none (default for colour)")
    p.add_argument("--image-size", help="resize images to N (square) or HxW")
    p.add_argument("--channels", choices=CHANNELS,
                   help="convert images to grey or rgb (default: as the files are)")
    p.add_argument("--data-on", choices=DATA_ON,
                   help="training images on the device, in host memory (each minibatch copied "
                        "over), or auto: host when they exceed half the free GPU memory "
                        "(default auto)")
    p.add_argument("--labels-per-class", type=int,
                   help="keep the labels of N training points per class, the rest unlabelled "
                        "(semi-supervised training, e.g. ssvae; default: all labels)")
    p.add_argument("--label-seed", type=int,
                   help="which points keep their labels with --labels-per-class (default 0; "
                        "independent of --seed)")


def _given_data(args) -> dict[str, Any]:
    return {name: getattr(args, name) for name in DATA_FLAGS
            if getattr(args, name, None) is not None}


def _add_train_flags(t: argparse.ArgumentParser) -> None:
    _add_data_flags(t)
    d = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(d, f.name)
        kind = _seed if f.name == "seed" else \
            {bool: None, int: int, float: float, str: None}[type(default)]
        flag = f"--{f.name.replace('_', '-')}"
        help_text = f"{TRAIN_HELP.get(f.name, '')} (default {default})"
        if isinstance(default, bool):
            t.add_argument(flag, dest=f.name, action="store_const", const=True, help=help_text)
        else:
            t.add_argument(flag, dest=f.name, type=kind, help=help_text)
    t.add_argument("--out", type=_path, help="run folder (default runs/MODEL-DATASET-TIME)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    t.add_argument("--eval-samples", type=int,
                   help="importance samples for the final log p(x); 0 skips it (default 5000)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_model_flags(p: argparse.ArgumentParser, cls, taken: set[str]) -> dict[str, str]:
    """One flag per field of ``cls.config_class``; a field whose flag another option already
    uses gets ``--model-NAME``. Returns {dest: flag}."""
    group = p.add_argument_group(f"settings of model {cls.name} (its config dataclass)")
    flags = {}
    for s in setting_fields(cls.config_class):
        flag = s.flag if s.flag not in taken else f"--model-{s.name.replace('_', '-')}"
        help_text = f"{MODEL_HELP.get(s.name, type_name(s.type))} (default {s.shown_default()})"
        group.add_argument(flag, dest=MODEL_DEST + s.name, type=_typed(s),
                           metavar=s.name.upper(), help=help_text)
        flags[MODEL_DEST + s.name] = flag
    return flags


def _taken(p: argparse.ArgumentParser) -> set[str]:
    return {o for a in p._actions for o in a.option_strings}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyro-vae", description="Latent-variable models as Pyro model/guide pairs.")
    p.add_argument("--version", action="version", version=f"pyro_vae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    spec_help = (f"a model: {', '.join(available())}; or my_pkg.module:Class, "
                 "path/to/file.py:Class, an entry-point name (pyro-vae list)")

    t = sub.add_parser("train", help="train a model by SVI (a run folder holds the results)")
    t.add_argument("model", nargs="?", help=spec_help)
    _add_train_flags(t)

    c = sub.add_parser("check", help="run check_model_guide on a model and a few data points")
    c.add_argument("model", help=spec_help)
    _add_data_flags(c, default=DEFAULT_DATASET)
    c.add_argument("--points", type=int, default=8, help="test points to run on (8)")
    c.add_argument("--device", default="cpu")

    n = sub.add_parser("new", help="write a model file and its test that pass the checks")
    n.add_argument("name", help="the model's name, a Python identifier (e.g. my_vae)")
    n.add_argument("--dir", type=Path, default=Path("."), help="where to write them (.)")

    e = sub.add_parser("evaluate", help="bounds on log p(x), active units, KL per dimension")
    e.add_argument("run", type=_path, help="a run folder")
    e.add_argument("--num-samples", type=int, default=5000, help="importance samples (5000)")
    e.add_argument("--estimator", default="is",
                   help="is: importance sampling (default); ais: also annealed importance "
                   "sampling of log p(x); bdmc: AIS's bracket on data simulated from the model")
    e.add_argument("--ais-steps", type=int, default=500, help="AIS temperatures (500)")
    e.add_argument("--ais-chains", type=int, default=8, help="AIS chains a point (8)")
    e.add_argument("--ais-leapfrog", type=int, default=2, help="leapfrog steps per HMC move (2)")
    e.add_argument("--bdmc-points", type=int, default=100,
                   help="points simulated from the model for bdmc (100)")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="draw new data from a trained run's prior")
    s.add_argument("run", type=_path, help="a run folder")
    s.add_argument("--num", type=int, default=64, help="how many (default 64)")
    s.add_argument("--out", type=_path, required=True, help="PNG file to write")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--label", type=int,
                   help="draw every image of this class (conditional models such as cvae)")

    pl = sub.add_parser("plot", help="latent interpolation, traversal or 2-D latent map")
    pl.add_argument("run", type=_path, help="a run folder")
    pl.add_argument("--kind", required=True, choices=LATENT_PICTURES)
    pl.add_argument("--out", type=_path, required=True, help="PNG file to write")
    pl.add_argument("--seed", type=_seed, default=0)
    pl.add_argument("--device", default="auto")

    sc = sub.add_parser("score", help="per-point log p(x) (importance sampled), ELBO and "
                        "reconstruction error of a data set under a run's model, as a CSV")
    sc.add_argument("run", type=_path, help="a run folder")
    sc.add_argument("--data", required=True, help=DATASET_HELP)
    sc.add_argument("--split", choices=("test", "train"), default="test")
    sc.add_argument("--num-samples", type=int, default=1000,
                    help="importance samples a point (1000)")
    sc.add_argument("--image-size", help="resize the images to N (square) or HxW first")
    sc.add_argument("--out", type=_path, default=Path("scores.csv"),
                    help="CSV file to write (scores.csv)")
    sc.add_argument("--seed", type=_seed, default=0)
    sc.add_argument("--device", default="auto")
    sc.add_argument("--no-progress", action="store_true")

    sub.add_parser("list", help="the models, objectives and data sets")

    g = sub.add_parser("diagnose", help="ArviZ diagnostics of a run's guide: NetCDF, PSIS "
                       "k-hat per point, NUTS reference for one point, PNG plots")
    g.add_argument("run", type=_path, help="a run folder")
    g.add_argument("--points", type=int, default=200, help="test points (default 200)")
    g.add_argument("--draws", type=int, default=1000, help="guide draws per point (1000)")
    g.add_argument("--ppc-draws", type=int, default=20,
                   help="posterior predictive draws kept in the NetCDF file (20)")
    g.add_argument("--nuts-point", type=int, default=0, help="test point of the NUTS reference")
    g.add_argument("--nuts-samples", type=int, default=500, help="NUTS draws per chain (500)")
    g.add_argument("--nuts-warmup", type=int, default=300, help="NUTS warm-up steps (300)")
    g.add_argument("--chains", type=int, default=2, help="NUTS chains, run in turn (2)")
    g.add_argument("--no-nuts", action="store_true", help="skip the NUTS reference")
    g.add_argument("--seed", type=_seed, default=0)
    g.add_argument("--device", default="auto")
    return p


def _subparser(p: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Two passes for ``train`` and ``check``: the first finds the model (from the command
    line, or the run folder of ``--resume``), the second parses that model's own flags."""
    p = _parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in ("train", "check"):
        return p.parse_args(argv), {}
    _Parser.quiet = True
    try:
        first, _ = p.parse_known_args(_without_model_flags(argv, _taken(_subparser(p, command))))
    except _FirstPass:
        first = None
    finally:
        _Parser.quiet = False
    if first is None:  # e.g. `check --help` without a model: the full parse prints or says it
        return p.parse_args(argv), {}
    cls = _model_class(first)
    flags = {}
    if cls is not None:
        sp = _subparser(p, first.command)
        flags = _add_model_flags(sp, cls, _taken(sp))
    args, extra = p.parse_known_args(argv)
    if extra:
        _refuse_extra(extra, cls, flags)
    return args, flags


def _without_model_flags(argv: list[str], known: set[str]) -> list[str]:
    """``argv`` without help and without the options it does not know yet (model settings),
    each with its value, so the first pass cannot take a setting's value for the model."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-h", "--help"):
            continue
        elif arg.startswith("--") and arg.split("=")[0] not in known:
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def _model_class(first: argparse.Namespace):
    """The model class named on the command line or by the run to resume (None: unknown
    yet; the command then says what is missing)."""
    if first.model:
        return resolve(first.model).cls
    if getattr(first, "resume", False) and first.out is not None:
        return runner.read_config(runner.RunFolder(first.out)).model_ref().cls
    return None


def _refuse_extra(extra: list[str], cls, flags: dict[str, str]) -> None:
    flag = next((a for a in extra if a.startswith("--")), None)
    if flag is not None and cls is not None:
        name = flag[2:].split("=")[0].replace("-", "_")
        known = sorted(f[2:].replace("-", "_") for f in flags.values())
        raise ConfigError(f"model {cls.name} has no setting {name!r}; its settings: "
                          f"{', '.join(known) or 'none'}")
    raise ConfigError(f"unrecognized arguments: {' '.join(extra)}")


def _given_model_settings(args) -> dict[str, Any]:
    return {k[len(MODEL_DEST):]: v for k, v in vars(args).items()
            if k.startswith(MODEL_DEST) and v is not None}


def _given_train(args) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


def _cmd_train(args, flags: dict[str, str]) -> int:
    from pyro_vae.prior_stage import run_with_prior

    progress = not args.no_progress
    if args.resume:
        results = _resume(args, progress)
    else:
        if not args.model:
            raise ConfigError(f"name a model to train: {', '.join(available())}, or "
                              "path/to/file.py:Class")
        evaluation = EvalConfig() if args.eval_samples is None else EvalConfig(args.eval_samples)
        config = RunConfig.for_model(args.model, dataset=args.dataset or DEFAULT_DATASET,
                                     binarize=args.binarize, train=_given_train(args),
                                     eval=evaluation, data=_given_data(args),
                                     **_given_model_settings(args))
        name = config.model_ref().name.replace("/", "_").replace(":", "_")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = args.out or Path("runs") / f"{name}-{Path(config.dataset).name}-{stamp}"
        # a model with a prior stage (vqvae --prior-epochs N) fits it next, into out/prior
        results = run_with_prior(config, out, progress=progress)
    if distributed.is_main():  # under torchrun rank 0 speaks for the run
        print("\n".join(format_summary(result.metrics, f"run: {result.run.path}")
                        for result in results))
    return 0


def _resume(args, progress: bool) -> list[runner.RunResult]:
    """``train --resume``: restated settings must equal the run's (:func:`runner.restated`);
    a prior stage the run has not reached yet follows (:mod:`pyro_vae.prior_stage`)."""
    from pyro_vae.prior_stage import resume_with_prior

    if args.out is None:
        raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
    saved = runner.read_config(runner.RunFolder(args.out))
    evaluation = None if args.eval_samples is None else replace(saved.eval,
                                                                 num_samples=args.eval_samples)
    return resume_with_prior(args.out, progress=progress, eval=evaluation, model=args.model,
                             dataset=args.dataset, binarize=args.binarize,
                             model_settings=_given_model_settings(args),
                             data=_given_data(args), **_given_train(args))


def _cmd_check(args, flags: dict[str, str]) -> int:
    from pyro_vae.testing import check_model_guide

    check_positive("--points", args.points)
    config = RunConfig.for_model(args.model, dataset=args.dataset, binarize=args.binarize,
                                 train={"device": args.device}, eval={"num_samples": 0},
                                 data=_given_data(args), **_given_model_settings(args))
    opened = runner.build(config)
    data = opened.data
    x = data.test_x[:args.points]
    y = data.test_y[:args.points] if opened.model.is_conditional and data.test_y is not None \
        else None
    problems = check_model_guide(opened.model, x, y)
    where = f"{len(x)} points of {config.dataset}"
    if not problems:
        print(f"{args.model}: every model/guide check passes on {where}")
        return 0
    print(f"{args.model}: {len(problems)} problem(s) on {where}:")
    for problem in problems:
        print(f"- {problem}")
    return 1


def _cmd_new(args, flags) -> int:
    from pyro_vae.scaffold import write_model_files

    for path in write_model_files(args.name, args.dir):
        print(path)
    return 0


def _cmd_evaluate(args, flags) -> int:
    saved = runner.read_config(runner.RunFolder(args.run))
    settings = replace(saved.eval, num_samples=args.num_samples, pictures=False,
                       estimator=args.estimator, ais_steps=args.ais_steps,
                       ais_chains=args.ais_chains, ais_leapfrog=args.ais_leapfrog,
                       bdmc_points=args.bdmc_points)
    metrics = runner.evaluate_run(args.run, settings, resolve_device(args.device),
                                  progress=not args.no_progress)
    print(format_summary(metrics, f"run: {args.run}"))
    return 0


def _cmd_sample(args, flags) -> int:
    from pyro_vae.plots import save_label_samples, save_samples

    check_positive("--num", args.num)
    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {args.out}")
    check_new_file(args.out)
    opened = runner.open_run(args.run, resolve_device(args.device))
    set_seed(args.seed)
    if args.label is not None:
        check_label(opened.model, args.label)
        print(save_label_samples(opened.model, args.out, args.label, num=args.num))
        return 0
    print(save_samples(opened.model, args.out, num=args.num, reference=opened.data.test_x))
    return 0


def _cmd_plot(args, flags) -> int:
    from pyro_vae.latent_plots import save_latent_picture

    if args.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must name a .png file, got {args.out}")
    check_new_file(args.out)
    opened = runner.open_run(args.run, resolve_device(args.device))
    require_local_latents(opened.model, opened.data, f"the {args.kind} picture")
    set_seed(args.seed)
    print(save_latent_picture(opened.model, opened.data, args.kind, args.out))
    return 0


def _cmd_score(args, flags) -> int:
    from pyro_vae.outliers import score_run, summarize, write_scores

    check_positive("--num-samples", args.num_samples)
    if args.out.suffix.lower() != ".csv":
        raise ConfigError(f"--out must name a .csv file, got {args.out}")
    check_new_file(args.out)
    set_seed(args.seed)
    scores = score_run(args.run, args.data, split=args.split, num_samples=args.num_samples,
                       image_size=args.image_size, device=resolve_device(args.device),
                       progress=not args.no_progress)
    write_scores(args.out, scores)
    s = summarize(scores)
    print(f"{args.out}: {s['points']} points of {args.data} ({args.split}); mean log p(x) "
          f"{s['log_px']:.2f} +- {s['log_px_mc_stderr']:.2f} (MC), ELBO {s['elbo']:.2f}, "
          f"reconstruction error {s['recon_error']:.2f}")
    return 0


def check_label(model, label: int) -> None:
    """Raise :class:`ConfigError` unless ``model`` generates by class and ``label`` is one."""
    classes = getattr(model, "num_classes", None)  # None: it does not generate by class
    if not classes:
        raise ConfigError(f"--label needs a model that generates by class (cvae with --task "
                          f"label, ssvae); "
                          f"this run's model {model.name} is not one")
    if not 0 <= label < classes:
        raise ConfigError(f"--label must be a class in 0..{classes - 1}, got {label}")


def _cmd_list(args, flags) -> int:
    print("models:     " + ", ".join(available()))
    print("            or my_pkg.module:Class, path/to/file.py:Class")
    print("objectives:")
    for line in describe():
        print(f"  {line}")
    print("data sets:  " + ", ".join(DATASETS))
    print("            or a path: a folder of PNG/JPEG images (class sub-folders = labels), "
          "a .npz/.npy file (x, optional y)")
    return 0


def _cmd_diagnose(args, flags) -> int:
    from pyro_vae.diagnostics import diagnose

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


COMMANDS = {"train": _cmd_train, "check": _cmd_check, "new": _cmd_new,
            "evaluate": _cmd_evaluate, "sample": _cmd_sample, "list": _cmd_list,
            "plot": _cmd_plot, "diagnose": _cmd_diagnose, "score": _cmd_score}


def _error(message: str, prog: str = "pyro-vae") -> int:
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _log_to_stdout() -> None:
    """Info lines and warnings (ArviZ's, Pyro's) on stdout: stderr is for the error line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.captureWarnings(True)


def _reported(prog: str, work: Callable[[], int]) -> int:
    """``work()``'s exit status; a :class:`UserError`, an ``OSError`` no write site named, or
    running out of memory is one line ``PROG: error: ...`` on stderr and 2, Ctrl-C one line
    and 130 (``pyro-vae`` and the example scripts alike)."""
    try:
        with file_errors():  # an OSError no write site named: one line too
            return work()
    except UserError as exc:
        return _error(str(exc), prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; every file written is whole (a run with a checkpoint "
              "continues with train --resume)", file=sys.stderr)
        return 130
    except Exception as exc:
        memory = out_of_memory(exc)
        if memory is None:
            raise
        return _error(str(memory), prog)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _log_to_stdout()

    def command() -> int:
        try:
            args, flags = _parse(argv)
        except SystemExit as exc:  # --help, --version, or a usage error already printed
            return int(exc.code or 0)
        return COMMANDS[args.command](args, flags)

    return _reported("pyro-vae", command)


def run_script(script_main: Callable[[], Any], script: str) -> None:
    """Run an example script's ``main()`` as ``pyro-vae`` runs a command (bad input, a path
    that cannot be written: one line on stderr naming the script, exit 2), then exit:
    ``if __name__ == "__main__": run_script(main, __file__)``."""

    def work() -> int:
        script_main()
        return 0

    sys.exit(_reported(Path(script).name, work))


if __name__ == "__main__":
    sys.exit(main())
