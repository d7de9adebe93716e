r"""Score-function gradients with baselines: Pyro's ``TraceGraph_ELBO``, the baseline chosen by
name for any guide.

For a non-reparameterizable guide site z with downstream cost
:math:`c(z) = \log p(x, z, \ldots) - \log q(z, \ldots | x)` (only the terms z influences,
Rao-Blackwellized over the dependency graph), the score-function (likelihood-ratio)
gradient is :math:`\mathbb E_q[(c(z) - b)\,\nabla_\phi \log q_\phi(z|x)]`, unbiased for any
baseline b that does not depend on z, since :math:`\mathbb E_q[\nabla_\phi \log q] = 0`. A good
b (close to :math:`\mathbb E_q[c]`) lowers the variance (Williams 1992; Mnih & Gregor 2014):

* ``none``: b = 0;
* ``decaying``: b = a running average of c, :math:`b \leftarrow \beta b + (1-\beta) c`
  (Pyro's ``use_decaying_avg_baseline``, beta = 0.9), updated after it is used;
* ``neural``: the decaying average plus an input-dependent correction :math:`s\,h_\psi(x)`
  (Mnih & Gregor's NVIL: a global and an input-dependent baseline), with :math:`h_\psi` a
  small MLP per site owned by the objective, registered with Pyro as module ``"baseline"``
  and trained on :math:`(c - b)^2` with its own learning rate (:func:`optim_args`); s is the
  site's minibatch scale, so :math:`h_\psi` predicts nats per data point.

The baselines are declared in the guide's ``infer`` dicts by ``poutine.infer_config``; the
model and guide are not changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceGraph_ELBO
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_vae.errors import check_choice

BASELINES = ("none", "decaying", "neural")
BASELINE_MODULE = "baseline"


class NeuralBaselines(nn.Module):
    """One MLP ``x -> R`` per guide site, created on first use."""

    def __init__(self, hidden: int = 100):
        super().__init__()
        self.hidden = hidden
        self.nets = nn.ModuleDict()

    def net(self, site: str, x: torch.Tensor) -> nn.Module:
        if site not in self.nets:
            d = math.prod(x.shape[1:])
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # a resumed run draws the same numbers
                net = nn.Sequential(nn.Flatten(), nn.Linear(d, self.hidden), nn.Tanh(),
                                    nn.Linear(self.hidden, 1)).to(x.device)
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            self.nets[site] = net
        return self.nets[site]


class TraceGraphBaselineELBO(TraceGraph_ELBO):
    """``TraceGraph_ELBO`` whose non-reparameterized guide sites get the named baseline.

    The guide's first argument is the data ``x`` (the input of the neural baseline)."""

    def __init__(self, *args, baseline: str = "none", baseline_beta: float = 0.9,
                 baseline_hidden: int = 100, **kwargs):
        check_choice("baseline", baseline, BASELINES)
        super().__init__(*args, **kwargs)
        self.baseline = baseline
        self.baseline_beta = baseline_beta
        self.baselines = NeuralBaselines(baseline_hidden) if baseline == "neural" else None

    def _config(self, x: torch.Tensor) -> Callable[[dict], dict]:
        def config(msg: dict) -> dict:
            if (msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg)
                    or msg["fn"].has_rsample or self.baseline == "none"):
                return {}
            options = {"use_decaying_avg_baseline": True, "baseline_beta": self.baseline_beta}
            if self.baselines is not None:
                net = self.baselines.net(msg["name"], x)
                scale, shape = msg["scale"], msg["fn"].batch_shape
                options["nn_baseline"] = lambda inp: (scale * net(inp).squeeze(-1)).expand(shape)
                options["nn_baseline_input"] = x
            return {"baseline": options}
        return config

    def with_baselines(self, guide: Callable) -> Callable:
        """``guide`` with the baseline declared at each of its non-reparameterized sites."""
        if self.baseline == "none":
            return guide

        def wrapped(x, *args, **kwargs):
            result = poutine.infer_config(guide, self._config(x))(x, *args, **kwargs)
            if self.baselines is not None:  # after the guide ran: every site's net exists
                pyro.module(BASELINE_MODULE, self.baselines, update_module_params=True)
            return result
        return wrapped

    def loss(self, model, guide, *args, **kwargs):
        return super().loss(model, self.with_baselines(guide), *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return super().loss_and_grads(model, self.with_baselines(guide), *args, **kwargs)


def optim_args(lr: float, eps: float, baseline_lr: float | None = None) -> dict | Callable:
    """Adam settings; with ``baseline_lr`` a callable giving the baseline module its own rate
    (Pyro optimizers accept ``optim_args(module_name, param_name)``)."""
    if baseline_lr is None:
        return {"lr": lr, "eps": eps}

    def per_param(module_name: str | None, param_name: str) -> dict:
        return {"lr": baseline_lr if module_name == BASELINE_MODULE else lr, "eps": eps}
    return per_param
