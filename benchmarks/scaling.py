"""Images per second of data-parallel training: 1 and 2 gloo processes on the CPU (and 1..N
NCCL processes when the machine has GPUs), side by side in one run.

    .venv/bin/python benchmarks/scaling.py                          # CPU: 1 and 2 processes
    .venv/bin/python benchmarks/scaling.py --cpu-procs 1,2,4 --threads 1 --epochs 4
    .venv/bin/python benchmarks/scaling.py --cpu-procs none --gpus 1,2,4,8   # a GPU machine

Each configuration starts its processes as torchrun does (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT in the environment; this script is the worker), and each worker runs
``pyro_vae.train`` on the same model, data set and *global* minibatch (so every configuration
takes the same steps; a rank's shard is batch / world), without the per-epoch hooks. The rate
is the training images of the epochs after the first (the first includes the parameter
discovery and warm-up) over their time on rank 0 (``ms/step``; ``all-reduce ms/step`` is
the part of it spent averaging the gradients, waiting for the slower rank included);
configurations alternate over ``--repeats`` rounds (slow drift of a shared machine hits all
alike) and the table gives the median rate and its [min, max]; ``speed-up`` is the median
over the 1-process median of the same backend. Every CPU process uses ``--threads`` torch
threads: with 1 thread, 2 processes use 2 cores where 1 process uses 1, which is the
comparison data parallelism offers on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _worker(args) -> None:
    import time

    import torch

    torch.set_num_threads(args.threads)
    from pyro_vae import distributed, runner
    from pyro_vae.hooks import Hook
    from pyro_vae.run_config import RunConfig
    from pyro_vae.runtime import resolve_device
    from pyro_vae.train import TrainConfig, train

    config = RunConfig.for_model(
        args.model, dataset=args.dataset,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device),
        eval={"num_samples": 0, "pictures": False}, latent_dim=args.latent_dim,
        hidden=tuple(int(h) for h in args.hidden.split(",")))
    distributed.setup(resolve_device(args.device))
    opened = runner.build(config)
    ends, reducing = [], [0.0, 0]
    real_average = distributed.average_gradients

    def timed_average(params, weight):  # the all-reduce of the gradients, timed
        sync = torch.cuda.synchronize if opened.data.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        real_average(params, weight)
        sync()
        reducing[0] += time.perf_counter() - t0
        reducing[1] += 1

    class EpochEnds(Hook):
        def after_epoch(self, state):
            if opened.data.device.type == "cuda":
                torch.cuda.synchronize()
            ends.append((time.perf_counter(), reducing[0]))

    distributed.average_gradients = timed_average
    train(opened.model, opened.data, config.train, progress=False, hooks=[EpochEnds()])
    if distributed.is_main():
        data = opened.data
        steps = data.num_batches(min(args.batch_size, data.num_train)) * (args.epochs - 1)
        seconds = ends[-1][0] - ends[0][0]
        print(json.dumps({"images_per_s": steps * args.batch_size / seconds,
                          "reduce_ms": 1000 * (ends[-1][1] - ends[0][1]) / steps,
                          "step_ms": 1000 * seconds / steps, "device": str(data.device)}))
    distributed.done()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, device: str, argv: list[str], threads: int) -> dict:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "WORLD_SIZE": str(world), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": str(threads),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", "--device", device,
                                       *argv], env=env, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker of world {world} on {device} failed "
                         f"(exit {[p.returncode for p in procs]})")
    return json.loads(outs[0].strip().splitlines()[-1])


def _sizes(text: str) -> list[int]:
    return [] if text == "none" else [int(n) for n in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vae")
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", default="400")
    p.add_argument("--batch-size", type=int, default=128, help="global minibatch (128)")
    p.add_argument("--epochs", type=int, default=3, help="the first is not timed (3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads a CPU process (1)")
    p.add_argument("--cpu-procs", default="1,2", help="gloo process counts, or none (1,2)")
    p.add_argument("--gpus", default="auto", help="NCCL process counts, auto (1..N) or none")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds (3)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    import torch

    shared = ["--model", args.model, "--dataset", args.dataset, "--latent-dim",
              str(args.latent_dim), "--hidden", args.hidden, "--batch-size",
              str(args.batch_size), "--epochs", str(args.epochs), "--threads", str(args.threads)]
    gpus = (list(range(1, torch.cuda.device_count() + 1)) if args.gpus == "auto"
            else _sizes(args.gpus))
    configs = [("gloo", "cpu", w) for w in _sizes(args.cpu_procs)] + \
        [("nccl", "cuda", w) for w in gpus]
    runs: dict[tuple, list[dict]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            runs[config].append(_launch(config[2], config[1], shared, args.threads))
    rows, base = [], {}
    for config in configs:
        rates = [r["images_per_s"] for r in runs[config]]
        median = statistics.median(rates)
        base.setdefault(config[0], median)
        rows.append((config[0], config[2], runs[config][0]["device"], median, min(rates),
                     max(rates), median / base[config[0]],
                     statistics.median(r["step_ms"] for r in runs[config]),
                     statistics.median(r["reduce_ms"] for r in runs[config])))
    print(f"{args.model} on {args.dataset}, global batch {args.batch_size}, "
          f"{args.epochs - 1} timed epochs, {args.threads} torch thread(s) a CPU process, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{args.repeats} rounds; images/s: median [min, max]")
    print("| backend | processes | device (rank 0) | images/s | speed-up | ms/step | "
          "all-reduce ms/step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for backend, world, device, rate, low, high, up, step, reduce in rows:
        print(f"| {backend} | {world} | {device} | {rate:,.0f} [{low:,.0f}, {high:,.0f}] "
              f"| {up:.2f} | {step:.2f} | {reduce:.2f} |")


if __name__ == "__main__":
    main()
