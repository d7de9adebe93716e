"""Is the minibatch IWAE estimate unbiased? pyro_vae's IWAE_ELBO against Pyro's RenyiELBO(0).

    .venv/bin/python benchmarks/iwae_minibatch.py

Probabilistic PCA on the 500 ``linear-gaussian`` test points with a guide that is not the
posterior (so L_5 < log p(x)). The full-data bound sum_n L_5(x_n) is estimated (a) from the
whole data set at once and (b) from minibatches of 50 scaled by N/B = 10, averaged over every
batch of ``--repeats`` passes. An unbiased minibatch estimator agrees with (a) within Monte
Carlo error; RenyiELBO(alpha=0) puts the N/B scale inside its log-sum-exp and does not.
Prints nats per data point with standard errors over the repeats.
"""

from __future__ import annotations

import argparse
import math

import torch
from pyro.infer import RenyiELBO

from pyro_vae import build_model, load_dataset, set_seed
from pyro_vae.objectives import IWAE_ELBO


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args(argv)
    set_seed(0)
    data = load_dataset("linear-gaussian")
    x, n = data.test_x, data.test_x.shape[0]
    model = build_model("linear", data.shape)
    with torch.no_grad():
        model.A.normal_(0, 0.1)
    ours = IWAE_ELBO(args.k, max_plate_nesting=1)
    renyi = RenyiELBO(alpha=0, num_particles=args.k, vectorize_particles=True,
                      max_plate_nesting=2)
    results: dict[str, list[float]] = {"full data, IWAE_ELBO": [],
                                        "minibatches, IWAE_ELBO": [],
                                        "minibatches, RenyiELBO(alpha=0)": []}
    batches = [x[i:i + args.batch_size] for i in range(0, n, args.batch_size)]
    for _ in range(args.repeats):
        results["full data, IWAE_ELBO"].append(-ours.loss(model.model, model.guide, x) / n)
        for name, elbo in (("minibatches, IWAE_ELBO", ours),
                           ("minibatches, RenyiELBO(alpha=0)", renyi)):
            total = sum(-elbo.loss(model.model, model.guide, b, num_data=n) for b in batches)
            results[name].append(total / len(batches) / n)
    exact = model.log_marginal(x).mean().item()
    print(f"exact log p(x) per point: {exact:.3f}   (K={args.k}, batch {args.batch_size}, "
          f"{args.repeats} repeats)")
    summary = {}
    for name, values in results.items():
        t = torch.tensor(values)
        mean, se = t.mean().item(), (t.std() / math.sqrt(len(t))).item()
        summary[name] = (mean, se)
        print(f"  {name:<34} {mean:9.3f} +- {se:.3f}")
    return summary


if __name__ == "__main__":
    main()
