"""Steps per second of the same network trained by hand-written PyTorch, by canonical Pyro and by
pyro_vae's training path, in one process, runs alternating; and memory over epochs.

    .venv/bin/python benchmarks/speed.py                                  # the whole grid
    .venv/bin/python benchmarks/speed.py --models vae-mlp --batch-sizes 128,1024 --repeats 9
    .venv/bin/python benchmarks/speed.py --models vae-mlp --paths torch,pyro,pyro_vae,jit
    .venv/bin/python benchmarks/speed.py --models none --memory-epochs 10 --full-epochs 0

Paths (every one starts from the same initialization and sees the same minibatches):

``torch``       a hand-written loss of the same model -- the closed-form Gaussian KL plus the
                Bernoulli log-likelihood of one reparameterized draw (a Monte Carlo log-weight
                per layer for ``hvae``; ``logsumexp`` over K draws for ``iwae-kK``) -- and
                ``torch.optim.Adam`` with its defaults, as a PyTorch user writes it;
``torch-fused`` the same with ``torch.optim.Adam(fused=True)``, to show what the optimizer alone
                is worth;
``pyro``        canonical Pyro: ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``, or
                ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True)`` for K > 1;
``pyro_vae``    what ``pyro_vae.train`` runs: the stepper of :mod:`pyro_vae.engine` (``fast``)
                on the objective ``make_objective`` gives (trace, or iwae with K particles);
``jit``         (not by default) SVI with ``JitTrace_ELBO``;
``torch-graphs``    (CUDA only, by default there) the ``torch-fused`` step captured once as a
                CUDA graph (fused, capturable Adam) and replayed: the fastest hand-written loop;
``pyro_vae-graphs`` (CUDA only, by default there) ``pyro-vae train --cuda-graphs``'s stepper,
                :class:`pyro_vae.graphs.CapturedStepper`: the same capture around Pyro's
                objective.

Each repeat runs every path for one block of steps (about ``--images`` images, fewer steps for
K particles), so slow drift of the machine hits all paths alike; the table gives the median
steps/s and, per path, the median and [min, max] over repeats of its time over ``torch``'s in
the same repeat. The memory table trains ``vae-mlp`` for whole epochs of mnist-5k with each path
and prints, per epoch, the resident set size (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA):
a path that retained graphs or traces would grow (so would its count of live tensors). The
epoch table times ``pyro_vae.train`` itself (each engine) on 60,000 images of MNIST's shape.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import statistics
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, JitTrace_ELBO, RenyiELBO, Trace_ELBO
from torch.nn import functional as F

from pyro_vae import TrainConfig, build_model, load_dataset, set_seed, train
from pyro_vae.data import Dataset
from pyro_vae.engine import make_stepper
from pyro_vae.graphs import CapturedStepper, CudaGraphs
from pyro_vae.objectives import make_objective
from pyro_vae.runtime import resolve_device

MLP = {"latent_dim": 50, "hidden": (400,), "activation": "relu"}
MODELS = {  # name: (registered model, settings, objective, K)
    "vae-mlp": ("vae", MLP, "trace", 1),
    "vae-conv": ("vae", {**MLP, "arch": "conv"}, "trace", 1),
    "hvae": ("hvae", {}, "trace", 1),  # the IWAE paper's two-layer model, tanh
    "iwae-k1": ("vae", MLP, "iwae", 1),
    "iwae-k5": ("vae", MLP, "iwae", 5),
    "iwae-k50": ("vae", MLP, "iwae", 50),
}
PATHS = ("torch", "torch-fused", "pyro", "pyro_vae", "jit", "torch-graphs", "pyro_vae-graphs")
DEFAULT_PATHS = "torch,torch-fused,pyro,pyro_vae,torch-graphs,pyro_vae-graphs"
GRAPH_PATHS = ("torch-graphs", "pyro_vae-graphs")  # CUDA only: skipped on the CPU
WARM_STEPS = 6  # untimed steps first: discovery, jit, caches, and a graph's warm-up and capture
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- the hand-written losses ------------------------------------------------------------------
def _normal_lp(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - HALF_LOG_2PI).sum(-1)


def _std_normal_lp(z):
    return (-0.5 * z ** 2 - HALF_LOG_2PI).sum(-1)


def _bernoulli_lp(logits, x, event_ndim):
    nll = F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    return -nll.flatten(-event_ndim).sum(-1)


def torch_loss(model, x, num_data: int, k: int) -> torch.Tensor:
    """Minus the ELBO (k = 1) or the IWAE bound L_k, summed over the batch, scaled to N."""
    ev = len(model.data_shape)
    if hasattr(model, "q_nets"):  # hvae: bottom-up guide, Monte Carlo log-weight per layer
        loc, scale = model.q_bottom(x)
        zs = [loc + scale * torch.randn_like(loc)]
        lq = _normal_lp(zs[0], loc, scale)
        for net in model.q_nets:
            loc, scale = net(zs[-1])
            zs.append(loc + scale * torch.randn_like(loc))
            lq = lq + _normal_lp(zs[-1], loc, scale)
        lp = _std_normal_lp(zs[-1])
        for i in reversed(range(len(zs) - 1)):
            loc, scale = model.prior_nets[i](zs[i + 1])
            lp = lp + _normal_lp(zs[i], loc, scale)
        elbo = _bernoulli_lp(model.decoder(zs[0]), x, ev) + lp - lq
        return -elbo.sum() * (num_data / x.shape[0])
    loc, scale = model.encoder(x)
    if k == 1:  # closed-form KL(q || N(0, I))
        z = loc + scale * torch.randn_like(loc)
        kl = (0.5 * (loc ** 2 + scale ** 2 - 1) - scale.log()).sum(-1)
        elbo = _bernoulli_lp(model.decoder(z), x, ev) - kl
        return -elbo.sum() * (num_data / x.shape[0])
    z = loc + scale * torch.randn(k, *loc.shape, device=loc.device)
    log_w = (_bernoulli_lp(model.decoder(z), x, ev) + _std_normal_lp(z)
             - _normal_lp(z, loc, scale))
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    return -bound.sum() * (num_data / x.shape[0])


# -- one stepper per path ---------------------------------------------------------------------
def make_path(path: str, spec: tuple, data, lr: float = 1e-3):
    """A fresh model (same seed, same initialization) and its ``step(x) -> loss`` closure."""
    name, settings, objective, k = spec
    set_seed(0)
    model = build_model(name, data.shape, **settings).to(data.device)
    model.name = f"{model.name}_{path}"  # one param-store prefix per path: they coexist
    n = data.num_train
    if path in GRAPH_PATHS and data.device.type != "cuda":
        return None
    if path == "torch-graphs":
        return _torch_graphs(model, n, k, lr)
    if path == "pyro_vae-graphs":
        elbo = make_objective(objective, k, max_plate_nesting=model.max_plate_nesting)
        stepper = CapturedStepper(model.model, model.guide, elbo, lr, 1e-8)
        return lambda x: stepper.step(x, None, num_data=n)
    if path.startswith("torch"):
        optim = torch.optim.Adam(model.parameters(), lr=lr,
                                 fused=True if path == "torch-fused" else None)

        def step(x):
            optim.zero_grad(set_to_none=True)
            loss = torch_loss(model, x, n, k)
            loss.backward()
            optim.step()
            return loss.detach()
        return step
    if path == "pyro_vae":
        elbo = make_objective(objective, k, max_plate_nesting=model.max_plate_nesting)
        stepper = make_stepper("fast", model.model, model.guide, elbo, lr=lr, eps=1e-8,
                               optim_args={"lr": lr})
        return lambda x: stepper.step(x, None, num_data=n)
    if path == "jit":
        if k > 1:
            return None  # Pyro has no jit IWAE
        elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    elif k > 1:
        elbo = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True,
                         max_plate_nesting=1)
    else:
        elbo = Trace_ELBO()
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": lr}), elbo)
    return lambda x: svi.step(x, num_data=n)


def _torch_graphs(model, n: int, k: int, lr: float):
    """The hand-written step captured as a CUDA graph after three eager steps on a side
    stream (torch's whole-network capture recipe), then replayed on a static input."""
    optim = torch.optim.Adam(model.parameters(), lr=lr, fused=True, capturable=True)
    backend, state = CudaGraphs(), {"eager": 0, "replay": None, "x": None}

    def body():
        optim.zero_grad(set_to_none=True)
        loss = torch_loss(model, state["x"], n, k)
        loss.backward()
        optim.step()
        return loss.detach()

    def step(x):
        if state["replay"] is None and state["eager"] < 3:
            state["eager"] += 1
            state["x"] = x
            with backend.eager():
                return body()
        if state["replay"] is None:
            state["x"] = x.clone()
            state["replay"] = backend.capture(body)
        state["x"].copy_(x)
        return state["replay"]()
    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(data, batch_size: int, count: int) -> list[torch.Tensor]:
    out = []
    while len(out) < count:
        out += [x for x, _ in data.batches(batch_size)]
    return out[:count]


def speed_rows(model_key: str, batch_size: int, paths: list[str], data, repeats: int,
               images: int) -> list[dict]:
    spec = MODELS[model_key]
    steps = max(3, images // (batch_size * spec[3]))
    steppers = {p: make_path(p, spec, data) for p in paths}
    steppers = {p: s for p, s in steppers.items() if s is not None}
    warm = _batches(data, batch_size, WARM_STEPS)
    for s in steppers.values():  # first steps: parameter discovery, jit compilation, caches
        for x in warm:
            s(x)
    seconds = {p: [] for p in steppers}
    for _ in range(repeats):
        xs = _batches(data, batch_size, steps)
        for p, s in steppers.items():
            _sync(data.device)
            t0 = time.perf_counter()
            for x in xs:
                s(x)
            _sync(data.device)
            seconds[p].append(time.perf_counter() - t0)
    rows = []
    for p, ts in seconds.items():
        ratio = [t / r for t, r in zip(ts, seconds.get("torch", ts), strict=True)]
        # against the best hand-written loop (fused Adam), repeat by repeat, when it ran
        fused = [t / r for t, r in zip(ts, seconds["torch-fused"], strict=True)] \
            if "torch-fused" in seconds else None
        # and against the same loop captured as a CUDA graph, where it ran
        graphed = [t / r for t, r in zip(ts, seconds["torch-graphs"], strict=True)] \
            if "torch-graphs" in seconds else None
        rows.append({"device": data.device.type, "model": model_key, "batch": batch_size,
                     "path": p, "steps": steps, "repeats": repeats,
                     "steps_per_s": steps / statistics.median(ts),
                     "ratio": statistics.median(ratio), "ratio_min": min(ratio),
                     "ratio_max": max(ratio),
                     "ratio_fused": statistics.median(fused) if fused else None,
                     "ratio_graphs": statistics.median(graphed) if graphed else None})
    return rows


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def memory_rows(paths: list[str], data, epochs: int, batch_size: int = 128) -> list[dict]:
    """Whole epochs of vae-mlp per path; memory at the end of each epoch."""
    rows = []
    for p in paths:
        step = make_path(p, MODELS["vae-mlp"], data)
        if step is None:
            continue
        for epoch in range(epochs):
            if data.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for x, _ in data.batches(batch_size):
                step(x)
            _sync(data.device)
            gc.collect()
            mb = (torch.cuda.max_memory_allocated() / 2 ** 20 if data.device.type == "cuda"
                  else _rss_mb())
            rows.append({"device": data.device.type, "path": p, "epoch": epoch + 1,
                         "memory_mb": mb, "live_tensors": _live_tensors()})
        del step
        gc.collect()
    return rows


def _live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def full_epoch_rows(data, batch_size: int, epochs: int) -> list[dict]:
    """Seconds per epoch of ``pyro_vae.train`` (vae-mlp, each engine) on 60,000 images of MNIST's
    shape: the training digits of ``data`` repeated, binarized afresh each time they are used."""
    reps = -(-60_000 // data.num_train)
    big = Dataset(f"{data.name} x{reps}", data.train_x.repeat(reps, 1, 1, 1)[:60_000], None,
                  data.test_x, None, data.kind, data.binarize)
    rows = []
    variants = [("svi", False), ("fast", False)] + \
        ([("fast", True)] if data.device.type == "cuda" else [])  # and with --cuda-graphs
    for engine, graphed in variants:
        set_seed(0)
        pyro.clear_param_store()
        model = build_model("vae", big.shape, **MLP)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, engine=engine,
                             cuda_graphs=graphed)
        history = train(model, big, config, progress=False).history
        secs = [h["seconds"] - (history[i - 1]["seconds"] if i else 0.0)
                for i, h in enumerate(history)]
        rows.append({"device": data.device.type,
                     "engine": engine + (" + cuda graphs" if graphed else ""), "batch": batch_size,
                     "images": big.num_train, "epoch_seconds": statistics.median(secs),
                     "epoch_seconds_min": min(secs)})
    return rows


def _print_speed(rows: list[dict]) -> None:
    print("| device | model | batch | path | steps/s | time / torch: median [min, max] | "
          "time / torch-fused | time / torch-graphs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        fused = "—" if r.get("ratio_fused") is None else f"{r['ratio_fused']:.3f}"
        graphed = "—" if r.get("ratio_graphs") is None else f"{r['ratio_graphs']:.3f}"
        print(f"| {r['device']} | {r['model']} | {r['batch']} | {r['path']} | "
              f"{r['steps_per_s']:.1f} | {r['ratio']:.3f} [{r['ratio_min']:.3f}, "
              f"{r['ratio_max']:.3f}] | {fused} | {graphed} |")


def _print_memory(rows: list[dict]) -> None:
    what = "peak CUDA MB" if rows and rows[0]["device"] == "cuda" else "RSS MB"
    epochs = sorted({r["epoch"] for r in rows})
    print(f"\n| path | {what} after epoch " + " | ".join(map(str, epochs))
          + " | last - first | live tensors after epoch 1, last |")
    print("| --- " * (len(epochs) + 3) + "|")
    for p in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == p]
        mbs = [r["memory_mb"] for r in mine]
        print(f"| {p} | " + " | ".join(f"{m:.1f}" for m in mbs) + f" | {mbs[-1] - mbs[0]:+.1f} | "
              f"{mine[0]['live_tensors']}, {mine[-1]['live_tensors']} |")


def _print_epochs(rows: list[dict]) -> None:
    print("\n| device | engine | batch | images | seconds per epoch: median (min) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['device']} | {r['engine']} | {r['batch']} | {r['images']} | "
              f"{r['epoch_seconds']:.2f} ({r['epoch_seconds_min']:.2f}) |")


def plot_ratios(rows: list[dict], path: Path) -> None:
    """Grouped bars: each path's time over ``torch``'s, per device, model and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((r["device"], r["model"], r["batch"]) for r in rows))
    paths = [q for q in dict.fromkeys(r["path"] for r in rows) if q != "torch"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(cells) * len(paths) / 2), 3.8))
    width = 0.8 / len(paths)
    for j, q in enumerate(paths):
        got = {(r["device"], r["model"], r["batch"]): r for r in rows if r["path"] == q}
        xs = [i + (j - (len(paths) - 1) / 2) * width for i, c in enumerate(cells) if c in got]
        mid = [got[c]["ratio"] for c in cells if c in got]
        err = [[got[c]["ratio"] - got[c]["ratio_min"] for c in cells if c in got],
               [got[c]["ratio_max"] - got[c]["ratio"] for c in cells if c in got]]
        ax.bar(xs, mid, width, yerr=err, capsize=2, label=q)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.1, color="r", lw=0.8, ls="--", label="1.10")
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([f"{m}\n{d} B={b}" for d, m, b in cells], fontsize=7)
    ax.set_ylabel("time per step / hand-written torch")
    ax.set_title("median over repeats, bars: [min, max]", fontsize=9)
    ax.legend(fontsize=7, ncol=len(paths) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _list(kind, choices):
    def parse(text: str) -> list:
        items = [] if text == "none" else [kind(t) for t in text.split(",")]
        bad = [i for i in items if choices and i not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items
    return parse


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_list(str, MODELS), default=list(MODELS),
                   help=f"comma-separated: {', '.join(MODELS)}, or none")
    p.add_argument("--batch-sizes", type=_list(int, None), default=[32, 128, 1024])
    p.add_argument("--paths", type=_list(str, PATHS), default=DEFAULT_PATHS.split(","),
                   help=f"comma-separated from {', '.join(PATHS)} (torch comes first)")
    p.add_argument("--devices", type=_list(str, ("cpu", "cuda")), default=None,
                   help="cpu and cuda where present (default)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--images", type=int, default=4096,
                   help="images per timed block (divided by K for K particles)")
    p.add_argument("--memory-epochs", type=int, default=5, help="0 skips the memory table")
    p.add_argument("--full-epochs", type=int, default=3,
                   help="epochs of train() on 60,000 images per engine (0 skips them)")
    p.add_argument("--full-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    p.add_argument("--plot", type=Path, default=None, help="draw the ratios into this PNG")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = ["torch"] + [q for q in args.paths if q != "torch"]
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, pyro {pyro.__version__}, {torch.get_num_threads()} CPU "
          f"threads, {args.repeats} repeats, ~{args.images} images per block")
    rows, mem, full = [], [], []
    for device in devices:
        data = load_dataset(args.dataset, device=resolve_device(device))
        if device == "cuda":
            print(f"cuda: {torch.cuda.get_device_name()}")
        for model_key in args.models:
            for b in args.batch_sizes:
                new = speed_rows(model_key, b, paths, data, args.repeats, args.images)
                _print_speed(new)
                rows += new
        if args.memory_epochs:
            mem += memory_rows(paths, data, args.memory_epochs)
        if args.full_epochs:
            full += full_epoch_rows(data, args.full_batch_size, args.full_epochs)
    print("\nall speed rows:")
    _print_speed(rows)
    if full:
        _print_epochs(full)
    if mem:
        _print_memory([r for r in mem if r["device"] == "cpu"])
        if any(r["device"] == "cuda" for r in mem):
            _print_memory([r for r in mem if r["device"] == "cuda"])
    if args.plot and rows:
        plot_ratios(rows, args.plot)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            every = rows + mem + full
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in every for k in r)))
            w.writeheader()
            w.writerows(every)
    return rows + mem + full


if __name__ == "__main__":
    main()
