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
point and splits them, for each K, into ``S / K`` disjoint groups of K: the mean over groups
and points is the estimate (of :math:`\mathbb{E}\log\hat p_K`), and the standard deviation over
groups of :math:`\log \hat p_K(x_n)` is the standard error of one K-sample estimate (root mean
square over points), measured rather than taken from the delta method, which is unreliable
precisely where the weights are heavy-tailed.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.evaluate import _per_point_log_prob, log_weights
from pyro_vae.models.base import LatentModel

METHODS = ("prior", "importance")


def has_exact_marginal(model: LatentModel) -> bool:
    """True when the model exposes its exact marginal (a ``log_marginal(x)`` method)."""
    return callable(getattr(model, "log_marginal", None))


@torch.no_grad()
def prior_log_weights(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                      num_particles: int = 1) -> torch.Tensor:
    """``log p(x_n | z_k)`` with ``z_k ~ p(z)``, as a ``(num_particles, len(x))`` tensor."""
    dim = -(model.max_plate_nesting + 1)
    traced = pyro.plate("eval_particles", num_particles, dim=dim)(model.model)
    with poutine.block():
        trace = poutine.trace(traced).get_trace(x, y)
    site = trace.nodes[model.observed_site]
    return _per_point_log_prob(model.observed_site, site, model.max_plate_nesting,
                               (num_particles, x.shape[0]))


def particles_per_chunk(x: torch.Tensor, max_elements: int) -> int:
    """How many particles of all of ``x`` fit in about ``max_elements`` values."""
    return max(1, max_elements // max(1, x[0].numel() * x.shape[0]))


def draw_log_weights(fn, model: LatentModel, x: torch.Tensor, y: torch.Tensor | None,
                     total: int, max_elements: int) -> torch.Tensor:
    """``fn(model, x, y, k)`` (log weights ``(k, N)``) called in chunks until ``total``
    particles are drawn: ``(total, N)``, double precision."""
    chunk = min(total, particles_per_chunk(x, max_elements))
    parts, done = [], 0
    while done < total:
        k = min(chunk, total - done)
        parts.append(fn(model, x, y, k).double())
        done += k
    return torch.cat(parts)


@torch.no_grad()
def estimate_log_likelihood(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None = None,
                            ks: tuple[int, ...] = (1, 10, 100, 1000), replicates: int = 10,
                            max_elements: int = 2**24) -> dict:
    """Exact log p(x) (when computable) and its prior- and importance-sampling estimates.

    Returns ``{"exact": float | None, "num_points": N, "rows": [...]}``, one row per method
    and K: ``method``, ``k``, ``estimate`` (mean over points of the mean K-sample estimate),
    ``stderr`` (standard error of one K-sample estimate of a point's log p(x), measured over
    ``replicates * max(ks) / K`` disjoint groups), ``stderr_of_mean`` (that of ``estimate``),
    and ``error`` (``estimate - exact``) when the exact value exists. Every K must divide
    ``max(ks)``; all log densities are at scale 1 (no beta or minibatch scaling).
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
        raise ConfigError("the standard error at the largest K needs replicates >= 2")
    model.eval()
    total, n = replicates * k_max, x.shape[0]
    exact = model.log_marginal(x).double() if has_exact_marginal(model) else None
    rows = []
    for method, fn in (("prior", prior_log_weights), ("importance", log_weights)):
        w = draw_log_weights(fn, model, x, y, total, max_elements)  # (S, N)
        for k in ks:
            groups = total // k
            est = torch.logsumexp(w.reshape(groups, k, n), 1) - math.log(k)  # (G, N)
            se_point = est.std(0, unbiased=True)  # one K-sample estimate's error, per point
            row = {"method": method, "k": k, "estimate": est.mean().item(),
                   "stderr": se_point.pow(2).mean().sqrt().item(),
                   "stderr_of_mean": (se_point.pow(2).sum().sqrt() / (n * groups**0.5)).item()}
            if exact is not None:
                row["error"] = row["estimate"] - exact.mean().item()
            rows.append(row)
    return {"exact": None if exact is None else exact.mean().item(), "num_points": n,
            "num_samples": total, "rows": rows}


def stderr_ratios(result: dict) -> dict[int, float]:
    """Prior-sampling over importance-sampling standard error at each K (where the latter is
    not zero: a guide equal to the exact posterior makes every importance weight p(x))."""
    by = {(r["method"], r["k"]): r["stderr"] for r in result["rows"]}
    return {k: by[("prior", k)] / by[("importance", k)] for m, k in by if m == "prior"
            and by.get(("importance", k), 0.0) > 1e-6}  # else importance sampling is exact
