r"""log p(x): exact where the marginal is computable, and two Monte Carlo estimates of it.

For a data point x and K samples,

* prior sampling:       :math:`\hat p_K = \frac1K \sum_k p(x \mid z_k)`, :math:`z_k \sim p(z)`;
* importance sampling:  :math:`\hat p_K = \frac1K \sum_k \frac{p(x, z_k)}{q(z_k \mid x)}`,
  :math:`z_k \sim q(z \mid x)` (the guide as proposal).

Both are unbiased for p(x); their logs are consistent and biased low for small K (Jensen),
and the importance-sampling one is the IWAE bound's estimator. The prior rarely proposes a z
that explains x, so its weights are far more spread and it needs far more samples for the
same error. The exact value comes from a model's ``log_marginal(x)`` capability (the mixture
sums over its components, probabilistic PCA has a closed form).

:func:`estimate_log_likelihood` draws ``S = replicates * max(ks)`` samples of each kind per
point through :mod:`pyro_vae.importance` (the same chunk generator and streaming
accumulator as evaluation, so no (S, N) matrix is stored) and splits them, for each K, into
``S / K`` disjoint groups. Following :mod:`pyro_vae.importance`'s convention, a row's
``estimate`` is the mean over groups and points, ``stderr`` its standard error across points,
``mc_stderr`` its Monte Carlo standard error (measured over groups), and ``mc_sd`` the spread
of ONE K-sample estimate of a point's log p(x) (sd over groups, root mean square over points)
-- measured rather than taken from the delta method, which is unreliable precisely where the
weights are heavy-tailed.
"""

from __future__ import annotations

import torch

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.importance import log_weights, prior_log_weights, sampled_bounds
from pyro_vae.models.base import LatentModel

METHODS = ("prior", "importance")


def has_exact_marginal(model: LatentModel) -> bool:
    """True when the model exposes its exact marginal (a ``log_marginal(x)`` method)."""
    return callable(getattr(model, "log_marginal", None))


@torch.no_grad()
def estimate_log_likelihood(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                            ks: tuple[int, ...] = (1, 10, 100, 1000), replicates: int = 10,
                            max_elements: int = 2**24) -> dict:
    """Exact log p(x) (when computable) and its prior- and importance-sampling estimates.

    Returns ``{"exact": float | None, "num_points": N, "num_samples": S, "rows": [...],
    "all_samples": {...}}``: one row per method and K with ``method``, ``k``, ``estimate``
    (mean over points of the mean K-sample estimate), ``stderr`` (across points), ``mc_stderr``
    (Monte Carlo, over the ``S / K`` groups), ``mc_sd`` (of one K-sample estimate of one
    point) and ``error`` (``estimate - exact``) when the exact value exists; ``all_samples``
    gives per method the log p(x) estimate from all S samples a point with its ``stderr`` and
    (delta-method) ``mc_stderr``. Every K must divide ``max(ks)``; all log densities are at
    scale 1 (no beta or minibatch scaling).
    """
    ks = tuple(sorted(set(ks)))
    if not ks:
        raise ConfigError("give at least one number of samples K")
    for k in ks:
        check_positive("K", k)
    check_positive("replicates", replicates)
    k_max = ks[-1]
    if any(k_max % k for k in ks):
        raise ConfigError(f"every K must divide the largest ({k_max}); got "
                          f"{', '.join(map(str, ks))}")
    if replicates < 2 and k_max in ks:
        raise ConfigError("the Monte Carlo error at the largest K is measured over its "
                          "replicates and needs replicates >= 2")
    model.eval()
    total, n = replicates * k_max, x.shape[0]
    exact = model.log_marginal(x).double() if has_exact_marginal(model) else None
    rows, all_samples = [], {}
    for method, fn in (("prior", prior_log_weights), ("importance", log_weights)):
        s = sampled_bounds(fn, model, x, y, total, ks, max_elements).summary()
        for k in ks:
            row = {"method": method, "k": k, "estimate": s["iwae"][k],
                   "stderr": s["iwae_stderr"][k], "mc_stderr": s["iwae_mc_stderr"][k],
                   "mc_sd": s["iwae_mc_sd"][k]}
            if exact is not None:
                row["error"] = row["estimate"] - exact.mean().item()
            rows.append(row)
        all_samples[method] = {"estimate": s["log_likelihood"],
                               "stderr": s["log_likelihood_stderr"],
                               "mc_stderr": s["log_likelihood_mc_stderr"]}
    return {"exact": None if exact is None else exact.mean().item(), "num_points": n,
            "num_samples": total, "rows": rows, "all_samples": all_samples}


def stderr_ratios(result: dict) -> dict[int, float]:
    """Prior-sampling over importance-sampling ``mc_sd`` (the spread of one K-sample estimate)
    at each K, where the latter is not zero: a guide equal to the exact posterior makes every
    importance weight p(x)."""
    by = {(r["method"], r["k"]): r["mc_sd"] for r in result["rows"]}
    return {k: by[("prior", k)] / by[("importance", k)] for m, k in by if m == "prior"
            and by.get(("importance", k), 0.0) > 1e-6}  # else importance sampling is exact
