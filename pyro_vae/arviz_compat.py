"""The two ArviZ lines behind one small interface; nothing else in pyro_vae imports arviz.

=================  ==============================  ==========================================
need               arviz 0.23 (Python 3.11)        arviz 1.x (Python >= 3.12, DataTree)
=================  ==============================  ==========================================
groups -> data     ``from_dict(posterior=..., ..)``  ``from_dict({"posterior": ..., ...})``
summary            ``hdi_prob``; ``hdi_3%/97%``    ``ci_kind="hdi", ci_prob``; ``hdi94_lb/ub``
PSIS k-hat         ``psislw(log_ratios)``          ``array_stats.psislw(-log_ratios)`` (sign!)
plots              ``plot_trace`` ... -> axes      ``plot_trace_dist`` ... -> PlotCollection
NetCDF             ``InferenceData.to_netcdf``     ``DataTree.to_netcdf(engine="h5netcdf")``
=================  ==============================  ==========================================

(``arviz_stats``' ``pareto_khat(..., log_weights=True)`` is wrong in 1.3.3, so it is not used.)
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

logging.getLogger("arviz.preview").setLevel(logging.WARNING)  # 0.23 logs its imports at INFO

import arviz as az  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae.runs import atomic_write, temp_file, writing  # noqa: E402

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1
SUMMARY_COLUMNS = ["mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "ess_tail", "r_hat"]


def from_dict(groups: dict[str, dict[str, np.ndarray]], dims: dict | None = None,
              coords: dict | None = None):
    """InferenceData (0.23) or DataTree (1.x) from ``{group: {variable: array}}``.

    Arrays of the sampled groups have shape ``(chain, draw, ...)``; ``observed_data`` has none.
    """
    groups = {g: v for g, v in groups.items() if v}
    if ARVIZ_1:
        return az.from_dict(groups, dims=dims, coords=coords)
    return az.from_dict(**groups, dims=dims, coords=coords)


def group_names(data) -> list[str]:
    if ARVIZ_1:
        return list(data.children)
    return list(data.groups())


def to_netcdf(data, path: str | Path) -> Path:
    """Write ``data`` as NetCDF through a temporary file beside ``path`` and a rename (no
    half-written file; a file system error names ``path``)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file(path)
        os.close(fd)
        try:
            data.to_netcdf(str(tmp), engine="h5netcdf")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def from_netcdf(path: str | Path):
    return az.from_netcdf(str(path))


def psis_khat(log_ratios: np.ndarray) -> np.ndarray:
    """Pareto k-hat of importance weights, one per row of ``log_ratios`` (rows: data points,
    columns: draws), from ArviZ's PSIS (Vehtari et al. 2024; Yao et al. 2018 for guides).
    Rows whose weights are all equal (to 1e-4 in log) get -inf: a perfect proposal."""
    log_ratios = np.asarray(log_ratios, dtype=np.float64)
    rows = log_ratios.reshape(-1, log_ratios.shape[-1])
    khat = np.full(rows.shape[0], -np.inf)
    # equal weights (a guide equal to the posterior) have no tail to fit: -inf, and skipped
    # (arviz 1.x raises or returns NaN on them)
    fit = np.ptp(rows, axis=-1) >= 1e-4
    if fit.any():
        if ARVIZ_1:
            from arviz_stats.base import array_stats

            _, k = array_stats.psislw(-rows[fit], r_eff=1.0, axis=-1)
        else:
            _, k = az.psislw(rows[fit], reff=1.0)
        khat[fit] = np.asarray(k, dtype=np.float64).reshape(-1)
    khat = khat.reshape(log_ratios.shape[:-1])
    return khat


def summary(data, var_names: list[str] | None = None, hdi_prob: float = 0.94) -> pd.DataFrame:
    """Mean, sd, HDI, bulk and tail ESS and R-hat, with the same columns on both lines."""
    if ARVIZ_1:
        table = az.summary(data, var_names=var_names, ci_kind="hdi", ci_prob=hdi_prob,
                           round_to="none")
        pct = round(100 * hdi_prob)
        low, high = f"hdi{pct}_lb", f"hdi{pct}_ub"
    else:
        table = az.summary(data, var_names=var_names, hdi_prob=hdi_prob, round_to="none")
        tail = 100 * (1 - hdi_prob) / 2
        low, high = f"hdi_{tail:g}%", f"hdi_{100 - tail:g}%"
    table = pd.DataFrame(table).rename(columns={low: "hdi_low", high: "hdi_high"})
    return table[SUMMARY_COLUMNS].astype(float)


PLOTS = {"trace": ("plot_trace", "plot_trace_dist"), "posterior": ("plot_posterior", "plot_dist"),
         "pair": ("plot_pair", "plot_pair")}


def save_plot(kind: str, data, path: str | Path, var_names: list[str] | None = None,
              coords: dict | None = None) -> Path:
    """An ArviZ ``trace``, ``posterior`` or ``pair`` plot saved as a PNG (Agg backend); a
    file system error names ``path``."""
    path = Path(path)
    old, new = PLOTS[kind]
    if ARVIZ_1:
        pc = getattr(az, new)(data, var_names=var_names, coords=coords, backend="matplotlib")
        try:
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                pc.savefig(str(path))
        finally:
            plt.close("all")
        return path
    kwargs = {"kind": "kde", "marginals": True} if kind == "pair" else {}
    axes = getattr(az, old)(data, var_names=var_names, coords=coords, show=False, **kwargs)
    png = io.BytesIO()
    try:
        np.asarray(axes).ravel()[0].figure.savefig(png, format="png", dpi=100,
                                                   bbox_inches="tight")
    finally:
        plt.close("all")
    atomic_write(path, png.getvalue())
    return path
