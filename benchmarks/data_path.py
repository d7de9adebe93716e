"""Seconds per epoch of the MLP VAE with its training images fed from host memory
(``--data-on host``: each minibatch gathered on the host and copied to the device) against
the same images resident on the device (``--data-on device``), on each device present.

    .venv/bin/python benchmarks/data_path.py                         # CPU, and CUDA if present
    .venv/bin/python benchmarks/data_path.py --scale 12 --repeats 5  # 54,000 images an epoch

Each repeat trains one epoch with each path in turn (alternating, so slow drift of the machine
hits both alike), from the same initialization and seed, so both see the same minibatches and
reach the same parameters (checked: the table says whether they did). The table gives the
median seconds per epoch of each path and the median and [min, max] over repeats of host over
device in the same repeat. On the CPU both paths read the same memory: the ratio is the cost
of the host path's gather into a fresh buffer. On CUDA it adds the copy over PCIe (pinned
buffers, ``non_blocking``).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from pyro_vae import TrainConfig, build_model, load_dataset, set_seed, train
from pyro_vae.data import DataConfig

MLP = {"latent_dim": 50, "hidden": (400,), "activation": "relu"}
PATHS = ("host", "device")


def _data(args, device: str, data_on: str):
    data = load_dataset(args.dataset, device=device, options=DataConfig(data_on=data_on))
    if args.scale > 1:  # a bigger epoch of the same images
        tiles = (args.scale, *[1] * (data.train_x.dim() - 1))
        data = replace(data, train_x=data.train_x.repeat(*tiles), train_y=None)
    if data_on == "host" and device != "cpu":
        assert data.on_host and data.train_x.device.type == "cpu"
    return data


def _epoch(data, args, device: str) -> tuple[float, dict]:
    set_seed(args.seed)
    model = build_model("vae", data.shape, **MLP).to(device)
    result = train(model, data, TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed,
                                            device=device), progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result.seconds, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def measure(args, device: str) -> dict:
    datasets = {path: _data(args, device, path) for path in PATHS}
    _epoch(datasets["device"], args, device)  # warm-up: allocator, kernels
    seconds = {path: [] for path in PATHS}
    same = True
    for _ in range(args.repeats):
        states = {}
        for path in PATHS:
            s, states[path] = _epoch(datasets[path], args, device)
            seconds[path].append(s)
        same &= all(torch.equal(states["host"][k], states["device"][k]) for k in states["host"])
    ratios = [h / d for h, d in zip(seconds["host"], seconds["device"], strict=True)]
    return {"device": device, "images": datasets["host"].num_train,
            "host": statistics.median(seconds["host"]),
            "resident": statistics.median(seconds["device"]),
            "ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "same": same}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--scale", type=int, default=1, help="repeat the training images this often")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", default="cpu,cuda", help="those present are measured")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    devices = [d for d in args.devices.split(",") if d == "cpu" or torch.cuda.is_available()]
    rows = [measure(args, device) for device in devices]
    print(f"MLP VAE ({MLP['hidden'][0]} hidden, {MLP['latent_dim']} latent), {args.dataset} "
          f"x{args.scale}, batch {args.batch_size}, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    print("| device | images/epoch | host-fed s/epoch | device-resident s/epoch | host / resident "
          "(median [min, max]) | same parameters |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['device']} | {r['images']:,} | {r['host']:.3f} | {r['resident']:.3f} | "
              f"{r['ratio']:.3f} [{r['min']:.3f}, {r['max']:.3f}] | {r['same']} |")
    return rows


if __name__ == "__main__":
    main()
