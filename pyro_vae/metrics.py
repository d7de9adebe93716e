"""The metrics registry: every key of ``metrics.json`` declared once, and the evaluations that
compute them.

* :data:`METRICS` declares each key: what it means and how the run summary shows it (the
  summary of ``pyro-vae train`` / ``evaluate`` and of the examples is :func:`summary_rows`);
* :data:`EVALUATIONS` are the computations a finished run goes through (:func:`evaluate_all`):
  each says which keys it writes and when it applies to a model and data set (and why not,
  otherwise; the reason lands in ``evaluation_skipped``).

Adding a metric: declare its key here and compute it in an existing evaluation, or add an
:class:`Evaluation`; the CLI, ``metrics.json`` and the examples pick it up. Nats are per data
point; log-likelihoods are negative numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pyro_vae.errors import ConfigError


def _float(m: dict, key: str) -> str | None:
    value = m.get(key)
    return f"{value:.3f}" if isinstance(value, float) else (None if value is None else str(value))


@dataclass(frozen=True)
class Metric:
    """One ``metrics.json`` key; ``label`` (a format string over the metrics) and ``show``
    make its row of the run summary (``show`` returns None: no row)."""

    key: str
    doc: str
    label: str | None = None
    show: Callable[[dict], str | None] | None = None
    bound: bool = False  # a bound on log p(x) or the training objective: must be finite

    def row(self, m: dict) -> tuple[str, str] | None:
        if self.label is None or m.get(self.key) is None:
            return None
        value = self.show(m) if self.show is not None else _float(m, self.key)
        return None if value is None else (self.label.format(**m), value)


def _log_px(m: dict) -> str:
    return f"{m['test_log_likelihood']:.3f} +- {m['test_log_likelihood_stderr']:.3f}"


def _log_px_bpd(m: dict) -> str:
    return f"{m['test_log_likelihood_bpd']:.4f} +- {m['test_log_likelihood_bpd_stderr']:.4f}"


def _log_px_ais(m: dict) -> str:
    return f"{m['test_log_px_ais']:.3f} +- {m['test_log_px_ais_stderr']:.3f}"


def _bits(key: str) -> Callable[[dict], str | None]:
    def show(m: dict) -> str | None:
        value = m.get(key)
        return f"{value:.4f}" if isinstance(value, float) else None

    return show


def _with_se(key: str) -> Callable[[dict], str]:
    def show(m: dict) -> str:
        return f"{m[key]:.3f} +- {m[key + '_se']:.3f}"

    return show


def _mutual_info(m: dict) -> str:
    return f"{_with_se('mutual_info')(m)} (log N = {m['mutual_info_max']:.2f})"


def _active(m: dict) -> str:
    per_dim = m.get("kl_is_per_dim") and m.get("kl_per_dim") is not None
    return f"{m['active_units']} of {len(m['kl_per_dim'])}" if per_dim else str(m["active_units"])


def _prior_gain(m: dict) -> str:
    stderr = m.get("test_prior_gain_stderr")
    return f"{m['test_prior_gain']:.3f}" + (f" +- {stderr:.3f}" if stderr is not None else "")


METRICS: dict[str, Metric] = {m.key: m for m in (
    # the run
    Metric("model", "the model spec (registered name, module:Class or file.py:Class)"),
    Metric("dataset", "the data set"),
    Metric("binarize", "binarization of the training images: dynamic, fixed or none"),
    Metric("objective", "the training objective"),
    Metric("num_particles", "samples per data point in training (IWAE's K)"),
    Metric("epochs", "epochs trained", "epochs", lambda m: str(m["epochs"])),
    Metric("seconds", "training seconds (evaluation not included)", "seconds"),
    Metric("device", "where it trained"),
    Metric("train_elbo", "mean training objective per point over the last epoch",
           "train ELBO", bound=True),
    Metric("beta", "KL weight of training (beta-VAE)"),
    Metric("kl_warmup_epochs", "epochs of the linear KL warm-up"),
    Metric("free_bits", "free bits, nats per latent dimension"),
    Metric("final_kl_weight", "the KL weight at the last step"),
    # importance-sampling bounds (pyro_vae.evaluate.evaluate)
    Metric("test_elbo", "ELBO per test point (mean of the log weights)", "test ELBO", bound=True),
    Metric("test_elbo_stderr", "standard error of test_elbo across test points"),
    Metric("test_iwae", "the IWAE bound L_k at the largest k", "test L_{iwae_k}", bound=True),
    Metric("iwae_k", "k of test_iwae"),
    Metric("test_iwae_bounds", "L_k for every k evaluated", bound=True),
    Metric("test_log_likelihood", "log p(x) per test point by importance sampling",
           "test log p(x) [{ll_num_samples} samples]", _log_px, bound=True),
    Metric("test_log_likelihood_stderr", "its standard error across test points"),
    Metric("test_log_likelihood_mc_stderr", "its Monte Carlo standard error"),
    Metric("ll_num_samples", "importance samples per test point"),
    Metric("num_test_points", "test points evaluated"),
    # the same bounds in bits per dimension (models with a discrete likelihood: Bernoulli or
    # 8-bit pixels): -nats / (bpd_dims ln 2), positive, lower is better
    Metric("test_elbo_bpd", "test_elbo in bits per dimension", "test ELBO [bits/dim]",
           _bits("test_elbo_bpd"), bound=True),
    Metric("test_iwae_bpd", "test_iwae in bits per dimension", "test L_{iwae_k} [bits/dim]",
           _bits("test_iwae_bpd"), bound=True),
    Metric("test_log_likelihood_bpd", "-test_log_likelihood in bits per dimension",
           "test -log p(x) [bits/dim]", _log_px_bpd, bound=True),
    Metric("test_log_likelihood_bpd_stderr", "its standard error across test points"),
    Metric("bpd_dims", "D of bits per dimension: data values scored per point (C*H*W)"),
    # latent usage
    Metric("active_units", "latent units with Cov_x(E_q[z_u]) > 0.01", "active units",
           _active),
    Metric("active_unit_threshold", "the covariance threshold of an active unit"),
    Metric("posterior_mean_variance", "Cov_x(E_q[z_u]) per latent unit"),
    Metric("kl_per_dim", "E_x KL(q(z_u|x) || p(z_u)) per latent unit (per site if not "
           "factorized)"),
    Metric("kl_is_per_dim", "whether kl_per_dim is per unit"),
    Metric("kl_total", "sum of kl_per_dim"),
    Metric("active_units_per_site", "active units of each latent site"),
    # known factors
    Metric("mig", "mutual information gap of the guide's means and the known factors",
           "MIG (known factors)"),
    Metric("mig_per_factor", "MIG of each known factor"),
    # the code of a point-mass guide (autoencoders: deterministic_code)
    Metric("code_sparsity", "share of (test point, code unit) pairs with |z| < "
           "code_zero_threshold", "code near zero [share]"),
    Metric("code_mean_abs", "mean |z| of the test codes over points and units", "mean |code|"),
    Metric("code_zero_threshold", "|z| below which a code unit counts as zero"),
    # clustering (models with cluster_probabilities: pyro_vae.clustering)
    Metric("test_cluster_accuracy", "clustering accuracy on the test split (Hungarian "
           "matching of clusters to labels)", "test cluster accuracy"),
    Metric("test_cluster_nmi", "normalized mutual information of clusters and test labels",
           "test cluster NMI"),
    Metric("train_cluster_accuracy", "clustering accuracy on the training split"),
    Metric("train_cluster_nmi", "NMI of clusters and training labels"),
    Metric("clusters_used", "distinct clusters the test points are assigned to"),
    # a model with a classifier q(y | x) (capability has_classifier, method classify)
    Metric("test_accuracy", "share of test points whose label the model's classifier q(y|x) "
           "gets right", "test accuracy [q(y|x)]"),
    # what did not apply
    Metric("evaluation_skipped", "evaluations that do not apply to this run, and why"),
    # pyro-vae diagnose (pyro_vae.diagnostics)
    Metric("diagnose_points", "test points diagnosed"),
    Metric("diagnose_draws", "guide draws per point"),
    Metric("khat", "PSIS k-hat of the guide per point"),
    Metric("khat_good", "points with k-hat < 0.5"),
    Metric("khat_ok", "points with 0.5 <= k-hat <= 0.7"),
    Metric("khat_bad", "points with k-hat > 0.7"),
    Metric("khat_max", "the largest finite k-hat"),
    Metric("khat_median", "the median finite k-hat"),
    Metric("diagnose_plots", "the PNG files diagnose wrote"),
    Metric("nuts_point", "the test point of the NUTS reference"),
    Metric("nuts_chains", "NUTS chains"),
    Metric("nuts_rhat_max", "largest R-hat of the NUTS reference"),
    Metric("nuts_ess_bulk_min", "smallest bulk ESS of the NUTS reference"),
    Metric("nuts_vs_guide_mean_abs_diff", "mean |NUTS mean - guide mean| over latent dims"),
    Metric("nuts_vs_guide_sd_ratio_mean", "mean guide sd / NUTS sd over latent dims"),
    # the codes of a vector-quantized model (vqvae: pyro_vae.codebook)
    Metric("codebook_size", "K, the codebook's entries"),
    Metric("code_positions", "L, the code positions per data point"),
    Metric("code_counts", "how often each codebook entry codes a test position"),
    Metric("codes_used", "codebook entries used by the test codes"),
    Metric("codebook_usage", "share of the codebook's entries used by the test codes",
           "codebook usage [share]"),
    Metric("codebook_perplexity", "exp of the entropy of the test codes' average one-hot "
           "(K: all entries used equally)", "codebook perplexity"),
    Metric("test_recon_nll", "-log p(x | z_q(x)) per test point, nats"),
    Metric("test_nll_uniform_prior", "bound on -log p(x): reconstruction NLL + L log K "
           "(uniform codes), nats per test point", "-log p(x) <= [uniform]", bound=True),
    Metric("test_nll_uniform_prior_stderr", "its standard error across test points"),
    Metric("test_nll_uniform_prior_bpd", "test_nll_uniform_prior in bits per dimension",
           "-log p(x) <= [uniform, bits/dim]", _bits("test_nll_uniform_prior_bpd"),
           bound=True),
    Metric("test_nll_learned_prior", "bound on -log p(x): reconstruction NLL - log p(codes) "
           "under the learned prior, nats per test point", "-log p(x) <= [learned prior]",
           bound=True),
    Metric("test_nll_learned_prior_stderr", "its standard error across test points"),
    Metric("test_nll_learned_prior_bpd", "test_nll_learned_prior in bits per dimension",
           "-log p(x) <= [learned, bits/dim]", _bits("test_nll_learned_prior_bpd"),
           bound=True),
    Metric("test_prior_gain", "uniform minus learned bound, nats per test point (paired)",
           "learned prior's gain [nats]", _prior_gain),
    Metric("test_prior_gain_stderr", "its standard error across test points (paired)"),
    # ELBO surgery (pyro_vae.information): KL term = I(x; z) + KL(q(z) || p(z))
    Metric("mutual_info", "I(x; z) under the aggregate posterior q(z) of the test points "
           "(nats; at most mutual_info_max = log N)", "I(x; z) [nats, <= log N]", _mutual_info),
    Metric("mutual_info_se", "its standard error across points"),
    Metric("mutual_info_max", "log N: the largest I(x; z) N points can show"),
    Metric("mutual_info_points", "N: the test points whose guides make up q(z)"),
    Metric("mutual_info_samples", "draws z ~ q(z | x) per point"),
    Metric("marginal_kl", "KL(q(z) || p(z)) of the aggregate posterior and the prior (nats)",
           "KL(q(z) || p(z)) [nats]", _with_se("marginal_kl")),
    Metric("marginal_kl_se", "its standard error across points"),
    Metric("kl_term", "E_x KL(q(z|x) || p(z)), the ELBO's KL term, from fresh draws (nats)",
           "KL term E_x KL(q(z|x) || p(z))", _with_se("kl_term")),
    Metric("kl_term_se", "its standard error across points"),
    Metric("surgery_gap", "mutual_info + marginal_kl - kl_term (zero up to Monte Carlo error)"),
    Metric("surgery_gap_se", "its standard error (paired per point)"),
    # annealed importance sampling (pyro-vae evaluate --estimator ais|bdmc: pyro_vae.ais)
    Metric("test_log_px_ais", "log p(x) per test point by annealed importance sampling (a "
           "stochastic lower bound)", "test log p(x) [AIS]", _log_px_ais, bound=True),
    Metric("test_log_px_ais_stderr", "its standard error across test points"),
    Metric("test_log_px_ais_mc_stderr", "its Monte Carlo standard error (delta method over "
           "chains, per point, combined)"),
    Metric("test_log_px_ais_per_point", "AIS log p(x) of each test point"),
    Metric("test_log_px_ais_per_point_mc_stderr", "the Monte Carlo standard error of each"),
    Metric("ais_steps", "AIS temperatures T"),
    Metric("ais_chains", "AIS chains per point"),
    Metric("ais_leapfrog", "leapfrog steps per HMC move"),
    Metric("ais_accept", "mean HMC acceptance probability over moves, chains and points"),
    Metric("ais_seconds", "seconds the AIS evaluation took (pilot included)"),
    Metric("bdmc_points", "points simulated from the model for BDMC"),
    Metric("bdmc_lower", "mean forward-AIS log p(x) of the simulated points (stochastic "
           "lower bound)", "BDMC lower [simulated]", bound=True),
    Metric("bdmc_upper", "mean reverse-AIS log p(x) of the simulated points (stochastic "
           "upper bound)", "BDMC upper [simulated]", bound=True),
    Metric("bdmc_gap", "bdmc_upper - bdmc_lower: how far forward AIS may be from log p(x)",
           "BDMC gap [nats]"),
    Metric("bdmc_lower_mc_stderr", "Monte Carlo standard error of bdmc_lower"),
    Metric("bdmc_upper_mc_stderr", "Monte Carlo standard error of bdmc_upper"),
    Metric("bdmc_seconds", "seconds BDMC took (pilot, forward and reverse)"),
    Metric("bdmc_steps", "BDMC's AIS temperatures T"),
    Metric("bdmc_chains", "BDMC's chains per point, each way"),
    Metric("bdmc_leapfrog", "BDMC's leapfrog steps per HMC move"),
)}
SUMMARY_ORDER = ("epochs", "seconds", "train_elbo", "test_elbo", "test_elbo_bpd", "test_iwae",
                 "test_iwae_bpd", "mig", "test_log_likelihood", "test_log_likelihood_bpd",
                 "active_units", "code_sparsity", "code_mean_abs", "test_cluster_accuracy",
                 "test_cluster_nmi", "test_accuracy", "codebook_usage", "codebook_perplexity",
                 "test_nll_uniform_prior", "test_nll_uniform_prior_bpd", "test_nll_learned_prior",
                 "test_nll_learned_prior_bpd", "test_prior_gain", "mutual_info", "marginal_kl",
                 "kl_term", "test_log_px_ais", "bdmc_lower", "bdmc_upper", "bdmc_gap")


def check_keys(metrics: dict) -> None:
    """Raise ``ConfigError`` for a key no :class:`Metric` declares (tests call it on every
    ``metrics.json`` a run writes)."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"undeclared metric(s) {', '.join(unknown)}: declare them in "
                          "pyro_vae.metrics.METRICS")


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def _nulled(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(v) for v in value]
    return value


def json_ready(metrics: dict) -> dict:
    """``metrics`` as valid JSON values: a NaN or infinite bound (``Metric.bound``) is an
    error, raised before anything is written; any other non-finite number (a standard error
    of a single point, a k-hat of -inf) becomes null."""
    from pyro_vae.errors import TrainingDiverged

    for key, value in metrics.items():
        if key in METRICS and METRICS[key].bound and _non_finite(value):
            raise TrainingDiverged(f"{key} came out {value} (the model gives the data zero "
                                   "probability or its weights diverged); metrics.json was not "
                                   "written; try a smaller --lr")
    return _nulled(metrics)


def summary_rows(metrics: dict) -> list[tuple[str, str]]:
    """(label, value) rows of a run summary, in :data:`SUMMARY_ORDER`."""
    rows = (METRICS[key].row(metrics) for key in SUMMARY_ORDER)
    return [r for r in rows if r is not None]


def format_summary(metrics: dict, title: str) -> str:
    return "\n".join([title] + [f"  {label:<32} {value}"
                                for label, value in summary_rows(metrics)])


# -- evaluations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    """One computation of a finished run: ``applies(model, data, settings, global_sites)``
    returns None when it applies, else the reason it does not (``global_sites``: the model's
    latents outside the data plate, found once per run); ``compute`` returns the declared
    ``keys``."""

    name: str
    keys: tuple[str, ...]
    applies: Callable[[Any, Any, Any, list[str]], str | None]
    compute: Callable[[Any, Any, Any, bool], dict]


def _per_point(global_sites: list[str]) -> str | None:
    if global_sites:
        return (f"per-data-point bounds need every latent inside the 'data' plate; "
                f"{', '.join(global_sites)} {'is' if len(global_sites) == 1 else 'are'} global")
    return None


def _bounds_apply(model, data, settings, global_sites) -> str | None:
    if not settings.num_samples:
        return "skipped by --eval-samples 0"
    return _per_point(global_sites)


def _bounds(model, data, settings, progress: bool) -> dict:
    from pyro_vae.evaluate import evaluate

    y = data.test_y if model.is_conditional else None
    return evaluate(model, data.test_x, y, num_samples=settings.num_samples,
                    iwae_ks=settings.iwae_ks, progress=progress)


def _global_elbo_applies(model, data, settings, global_sites) -> str | None:
    return None if global_sites else "the model has no global latents"


@torch.no_grad()
def _global_elbo(model, data, settings, progress: bool) -> dict:
    from pyro_vae.structure import whole_data_elbo

    y = data.test_y if model.is_conditional else None
    draws = torch.tensor([whole_data_elbo(model, data.test_x, y) for _ in range(20)])
    return {"test_elbo": draws.mean().item(),
            "test_elbo_stderr": (draws.std() / draws.numel() ** 0.5).item()}


def _mig_applies(model, data, settings, global_sites) -> str | None:
    if getattr(data, "test_factors", None) is None:
        return f"data set {data.name} has no known factors"
    return _per_point(global_sites)


def _mig(model, data, settings, progress: bool) -> dict:
    from pyro_vae.evaluate import disentanglement

    return disentanglement(model, data)


def _sparsity_applies(model, data, settings, global_sites) -> str | None:
    if not getattr(model, "deterministic_code", False):
        return "the model's code is not a point (deterministic_code)"
    return _per_point(global_sites)


def _sparsity(model, data, settings, progress: bool) -> dict:
    from pyro_vae.evaluate import code_sparsity

    return code_sparsity(model, data.test_x, data.test_y if model.is_conditional else None)


def _clusters_apply(model, data, settings, global_sites) -> str | None:
    from pyro_vae.clustering import can_cluster

    if not can_cluster(model):
        return "the model does not cluster (no cluster_probabilities)"
    return None if data.test_y is not None else f"data set {data.name} has no test labels"


def _clusters(model, data, settings, progress: bool) -> dict:
    from pyro_vae.clustering import cluster_scores, train_points

    test = cluster_scores(model, data.test_x, data.test_y)
    out = {"test_cluster_accuracy": test["accuracy"], "test_cluster_nmi": test["nmi"],
           "clusters_used": test["clusters_used"]}
    if data.train_y is not None:
        train = cluster_scores(model, train_points(data), data.train_y)
        out |= {"train_cluster_accuracy": train["accuracy"], "train_cluster_nmi": train["nmi"]}
    return out


def _classifier_applies(model, data, settings, global_sites) -> str | None:
    if not getattr(model, "has_classifier", False):
        return "the model has no classifier q(y | x)"
    if data.test_y is None:
        return f"data set {data.name} has no test labels"
    return None


@torch.no_grad()
def _classifier(model, data, settings, progress: bool) -> dict:
    hits = model.classify(data.test_x) == data.test_y.to(data.test_x.device)
    return {"test_accuracy": hits.double().mean().item()}


def _codebook_applies(model, data, settings, global_sites) -> str | None:
    from pyro_vae.codebook import can_quantize

    return None if can_quantize(model) else "the model has no codebook (code_indices)"


def _codebook(model, data, settings, progress: bool) -> dict:
    from pyro_vae.codebook import code_measures

    return code_measures(model, data.test_x)


def _information_applies(model, data, settings, global_sites) -> str | None:
    from pyro_vae.information import not_applicable

    if not settings.num_samples:
        return "skipped by --eval-samples 0"
    return _per_point(global_sites) or not_applicable(model, data.test_x)


def _information(model, data, settings, progress: bool) -> dict:
    from pyro_vae.information import surgery_metrics

    return surgery_metrics(model, data.test_x)


def _annealing_applies(estimator: str):
    def applies(model, data, settings, global_sites) -> str | None:
        if getattr(settings, "estimator", "is") != estimator:
            return f"not asked for (--estimator {estimator})"
        if getattr(model, "has_discrete_latents", False):
            return "AIS moves continuous latents by HMC; the model has discrete ones"
        if getattr(model, "deterministic_code", False):
            return "the guide is a point mass (deterministic_code): no density to anneal from"
        return _per_point(global_sites)
    return applies


def _ais(model, data, settings, progress: bool) -> dict:
    from pyro_vae.ais import ais

    config = settings.ais_config()
    result = ais(model, data.test_x, data.test_y if model.is_conditional else None, config,
                 progress=progress)
    s = result.summary()
    return {"test_log_px_ais": s["log_px"], "test_log_px_ais_stderr": s["stderr"],
            "test_log_px_ais_mc_stderr": s["mc_stderr"],
            "test_log_px_ais_per_point": result.log_px.tolist(),
            "test_log_px_ais_per_point_mc_stderr": result.mc_stderr.tolist(),
            "ais_steps": config.steps, "ais_chains": config.chains,
            "ais_leapfrog": config.leapfrog, "ais_accept": s["accept"],
            "ais_seconds": s["seconds"]}


def _bdmc(model, data, settings, progress: bool) -> dict:
    from pyro_vae.bdmc import bdmc

    config = settings.ais_config()
    s = bdmc(model, settings.bdmc_points, data.test_x,
             data.test_y if model.is_conditional else None, config, progress=progress).summary()
    return {"bdmc_points": s["points"], "bdmc_lower": s["lower"], "bdmc_upper": s["upper"],
            "bdmc_gap": s["gap"], "bdmc_lower_mc_stderr": s["lower_mc_stderr"],
            "bdmc_upper_mc_stderr": s["upper_mc_stderr"], "bdmc_seconds": s["seconds"],
            "bdmc_steps": config.steps, "bdmc_chains": config.chains,
            "bdmc_leapfrog": config.leapfrog}


EVALUATIONS: dict[str, Evaluation] = {e.name: e for e in (
    Evaluation("bounds", ("test_elbo", "test_elbo_stderr", "test_iwae", "iwae_k",
                          "test_iwae_bounds", "test_log_likelihood",
                          "test_log_likelihood_stderr", "test_log_likelihood_mc_stderr",
                          "ll_num_samples", "num_test_points", "test_elbo_bpd",
                          "test_iwae_bpd", "test_log_likelihood_bpd",
                          "test_log_likelihood_bpd_stderr", "bpd_dims", "active_units",
                          "active_unit_threshold", "posterior_mean_variance", "kl_per_dim",
                          "kl_is_per_dim", "kl_total", "active_units_per_site"),
               _bounds_apply, _bounds),
    Evaluation("global-elbo", ("test_elbo", "test_elbo_stderr"), _global_elbo_applies,
               _global_elbo),
    Evaluation("mig", ("mig", "mig_per_factor"), _mig_applies, _mig),
    Evaluation("sparsity", ("code_sparsity", "code_mean_abs", "code_zero_threshold"),
               _sparsity_applies, _sparsity),
    Evaluation("clusters", ("test_cluster_accuracy", "test_cluster_nmi", "clusters_used",
                            "train_cluster_accuracy", "train_cluster_nmi"),
               _clusters_apply, _clusters),
    Evaluation("classifier", ("test_accuracy",), _classifier_applies, _classifier),
    Evaluation("codebook", ("codebook_size", "code_positions", "code_counts", "codes_used",
                            "codebook_usage", "codebook_perplexity", "test_recon_nll",
                            "test_nll_uniform_prior", "test_nll_uniform_prior_stderr",
                            "test_nll_uniform_prior_bpd", "test_nll_learned_prior",
                            "test_nll_learned_prior_stderr", "test_nll_learned_prior_bpd",
                            "test_prior_gain", "test_prior_gain_stderr"),
               _codebook_applies, _codebook),
    Evaluation("information", ("mutual_info", "mutual_info_se", "mutual_info_max",
                               "mutual_info_points", "mutual_info_samples", "marginal_kl",
                               "marginal_kl_se", "kl_term", "kl_term_se", "surgery_gap",
                               "surgery_gap_se"), _information_applies, _information),
    Evaluation("ais", ("test_log_px_ais", "test_log_px_ais_stderr", "test_log_px_ais_mc_stderr",
                       "test_log_px_ais_per_point", "test_log_px_ais_per_point_mc_stderr",
                       "ais_steps", "ais_chains", "ais_leapfrog", "ais_accept", "ais_seconds"),
               _annealing_applies("ais"), _ais),
    Evaluation("bdmc", ("bdmc_points", "bdmc_lower", "bdmc_upper", "bdmc_gap",
                        "bdmc_lower_mc_stderr", "bdmc_upper_mc_stderr", "bdmc_seconds",
                        "bdmc_steps", "bdmc_chains", "bdmc_leapfrog"),
               _annealing_applies("bdmc"), _bdmc),
)}


def evaluate_all(model, data, settings, progress: bool = False,
                 global_sites: list[str] | None = None) -> dict:
    """Every evaluation that applies, merged; ``evaluation_skipped`` says why the others did
    not run. ``settings`` is an :class:`~pyro_vae.run_config.EvalConfig`; ``global_sites``
    (:func:`pyro_vae.structure.global_latent_sites`) is found here when not given."""
    from pyro_vae.structure import global_latent_sites

    model.eval()
    if global_sites is None:
        global_sites = global_latent_sites(model, data.test_x,
                                           data.test_y if model.is_conditional else None)
    metrics, skipped = {}, {}
    for evaluation in EVALUATIONS.values():
        reason = evaluation.applies(model, data, settings, global_sites)
        if reason is not None:
            skipped[evaluation.name] = reason
            continue
        result = evaluation.compute(model, data, settings, progress)
        undeclared = sorted(set(result) - set(evaluation.keys))
        if undeclared:
            raise ConfigError(f"evaluation {evaluation.name} returned undeclared keys "
                              f"{', '.join(undeclared)}")
        metrics |= result
    metrics["evaluation_skipped"] = skipped
    return metrics
