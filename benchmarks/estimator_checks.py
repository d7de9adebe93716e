"""The numbers behind tests/test_estimators.py: each estimator against exact gradients.

    .venv/bin/python benchmarks/estimator_checks.py

A one-layer Bernoulli latent model with 3 bits and 4 pixels (8 states: exact ELBO, E[L_3] and
p(z|x) by enumeration, ``pyro_vae.estimators.exact``), parameters drawn from N(0, 0.7^2), two
data points, the same seeds and numbers of draws as the tests. Prints, per estimator, the
largest |mean - exact| / standard error over the 34 parameter coordinates (unbiased: below
about 4), the guide-gradient variance with and without baselines, DReG against IWAE on
probabilistic PCA with the guide near the posterior, and VIMCO against RenyiELBO(alpha=0)
training the guide alone.
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_vae import load_dataset, set_seed
from pyro_vae.estimators import RWS_ELBO, VIMCO_ELBO, DReG_IWAE_ELBO
from pyro_vae.estimators.baselines import TraceGraphBaselineELBO
from pyro_vae.estimators.exact import (
    exact_elbo,
    exact_gradient,
    exact_iwae,
    exact_wake_phi_target,
    tiny_problem,
)
from pyro_vae.estimators.gradients import (
    difference_z_scores,
    gradient_draws,
    guide_parameters,
    ppca_near_posterior,
    summarize,
    z_scores,
)
from pyro_vae.objectives import IWAE_ELBO


def tiny():
    pyro.clear_param_store()
    set_seed(0)
    return tiny_problem()


def max_z(draws, exact) -> float:
    return z_scores(summarize("", draws), exact).max().item()


def draws_with_baseline(objective, model, x, params, n):
    optim = None
    if getattr(objective, "baselines", None) is not None:
        gradient_draws(objective, model, x, [], 1)
        optim = torch.optim.Adam(objective.baselines.parameters(), lr=1e-2)
    return gradient_draws(objective, model, x, params, n, baseline_optim=optim)


def main() -> None:
    for name, make in [("Trace_ELBO (score function)", Trace_ELBO),
                       ("tracegraph decaying", lambda: TraceGraphBaselineELBO(
                           baseline="decaying")),
                       ("tracegraph neural", lambda: TraceGraphBaselineELBO(baseline="neural"))]:
        m, x = tiny()
        params = list(m.parameters())
        d = draws_with_baseline(make(), m, x, params, 600)
        print(f"{name:<30} max|z| vs exact grad ELBO: "
              f"{max_z(d, exact_gradient(lambda m=m, x=x: exact_elbo(m, x), params)):.2f}")
    m, x = tiny()
    params = list(m.parameters())
    d = gradient_draws(VIMCO_ELBO(num_particles=3, max_plate_nesting=2), m, x, params, 1500)
    print(f"{'VIMCO K=3':<30} max|z| vs exact grad E[L_3]: "
          f"{max_z(d, exact_gradient(lambda: exact_iwae(m, x, 3), params)):.2f}")
    m, x = tiny()
    guide = guide_parameters(m, x)
    theta = [p for p in m.parameters() if all(p is not q for q in guide)]
    d = gradient_draws(RWS_ELBO(num_particles=3, max_plate_nesting=2), m, x, theta, 1000)
    print(f"{'RWS K=3 wake-theta':<30} max|z| vs exact grad_theta E[L_3]: "
          f"{max_z(d, exact_gradient(lambda: exact_iwae(m, x, 3), theta)):.2f}")
    target = exact_gradient(lambda: exact_wake_phi_target(m, x), guide)
    for k in (2, 200):
        d = gradient_draws(RWS_ELBO(num_particles=k, max_plate_nesting=2), m, x, guide, 500)
        err = (summarize("", d).mean - target.double()).norm().item()
        print(f"{f'RWS K={k} wake-phi':<30} |mean - exact| = {err:.4f}, "
              f"max|z| = {max_z(d, target):.2f}")
    m, x = tiny()
    guide = guide_parameters(m, x)
    variance = {}
    for baseline in ("none", "decaying", "neural"):
        objective = TraceGraphBaselineELBO(baseline=baseline)
        gradient_draws(objective, m, x, guide, 50)
        optim = None
        if baseline == "neural":
            optim = torch.optim.Adam(objective.baselines.parameters(), lr=1e-2)
            gradient_draws(objective, m, x, guide, 150, baseline_optim=optim)
        d = gradient_draws(objective, m, x, guide, 300, baseline_optim=optim)
        variance[baseline] = summarize(baseline, d).variance.sum().item()
    print("guide-gradient total variance:", {k: round(v, 3) for k, v in variance.items()})

    pyro.clear_param_store()
    set_seed(0)
    data = load_dataset("linear-gaussian")
    ppca = ppca_near_posterior(data.shape)
    x = data.test_x[:5]
    guide = guide_parameters(ppca, x)
    plain = summarize("", gradient_draws(IWAE_ELBO(num_particles=5, max_plate_nesting=2), ppca,
                                         x, guide, 600))
    dreg = summarize("", gradient_draws(DReG_IWAE_ELBO(num_particles=5, max_plate_nesting=2),
                                        ppca, x, guide, 600))
    z = difference_z_scores(plain, dreg).max().item()
    vp, vd = plain.variance.sum().item(), dreg.variance.sum().item()
    print(f"PPCA K=5, DReG vs IWAE guide gradient: max|z| {z:.2f}; total variance IWAE "
          f"{vp:.3f}, DReG {vd:.3f} (ratio {vd / vp:.4f})")

    m, x = tiny()
    guide = guide_parameters(m, x)
    start = [p.detach().clone() for p in guide]
    before = exact_elbo(m, x).item()
    for name, objective in [("RenyiELBO(0) K=5", RenyiELBO(
            alpha=0, num_particles=5, max_plate_nesting=2, vectorize_particles=True)),
            ("VIMCO K=5", VIMCO_ELBO(num_particles=5, max_plate_nesting=2))]:
        with torch.no_grad():
            for p, p0 in zip(guide, start, strict=True):
                p.copy_(p0)
        optim = torch.optim.Adam(guide, lr=0.05)
        for _ in range(150):
            optim.zero_grad()
            objective.loss_and_grads(m.model, m.guide, x)
            optim.step()
        change = max((p - p0).abs().max().item() for p, p0 in zip(guide, start, strict=True))
        print(f"{name:<30} exact ELBO {before:.4f} -> {exact_elbo(m, x).item():.4f}, largest "
              f"guide parameter change {change:.4g}")


if __name__ == "__main__":
    main()
