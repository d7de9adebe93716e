r"""The KL weight of training: beta, a linear warm-up, and free bits, for any model.

With latent sites :math:`z` (``LatentModel.latent_sites``) the training loop optimizes

.. math::

    \mathcal{L}_w = \mathbb{E}_q[\log p(x \mid z)] - w_t \, \mathrm{KL}(q(z \mid x) \,\|\, p(z)),
    \qquad w_t = \beta \cdot \min\Big(1, \frac{t}{T_\text{warm-up}}\Big),

where :math:`t` counts epochs (fractionally, step by step) from 0: the KL weight ramps linearly
from 0 to :math:`\beta` over the warm-up (Bowman et al. 2016; Sønderby et al. 2016) and
:math:`\beta \ne 1` is the beta-VAE (Higgins et al. 2017). The weight is applied the way
``poutine.scale`` applies a scale -- multiplying ``msg["scale"]`` -- but only at the latent
sites, in the model *and* the guide (:class:`LatentScaleMessenger`), so
:math:`\log p(z) - \log q(z|x)` is weighted and :math:`\log p(x|z)` is not. Unlike
``poutine.scale`` it allows the weight 0 where the ramp starts.

Free bits (Kingma et al. 2016, the IAF paper, eq. 15) replace the KL term by

.. math::

    \sum_{d} \max\big(\lambda, \; \overline{\mathrm{KL}}_d\big), \qquad
    \overline{\mathrm{KL}}_d = \frac{1}{|B|} \sum_{n \in B} \mathrm{KL}\big(q(z_{nd} \mid x_n)
    \,\|\, p(z_{nd})\big),

a minimum of :math:`\lambda` nats per latent dimension, averaged over the minibatch: below it
the KL exerts no pull toward the prior, so a dimension is not pushed into collapse early.
:class:`FreeBitsELBO` needs per-dimension terms, i.e. latents whose guide and prior factorize
over their elements (``Independent`` wrappers of elementwise families, e.g. ``Normal``); it
combines with the objectives whose registry entry allows it (``trace``: Monte Carlo KL per
dimension; ``meanfield``: analytic KL per dimension, :data:`pyro_vae.objectives.OBJECTIVES`) and
refuses jit and discrete latents.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from torch.distributions import Independent, kl_divergence

from pyro_vae.errors import ConfigError


def kl_weight(beta: float, warmup_epochs: int, epoch: int, step: int = 0,
              num_batches: int = 1) -> float:
    """The KL weight at ``step`` of ``epoch`` (both from 0): beta times the linear ramp."""
    if warmup_epochs <= 0:
        return float(beta)
    return float(beta) * min(1.0, (epoch + step / num_batches) / warmup_epochs)


class LatentScaleMessenger(Messenger):
    """``poutine.scale`` restricted to the sample sites named in ``sites``.

    ``weight`` is read at every message, so one handler follows a schedule: set
    ``handler.weight`` between steps.
    """

    def __init__(self, sites: Iterable[str], weight: float = 1.0):
        super().__init__()
        self.sites = frozenset(sites)
        self.weight = weight

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites and self.weight != 1.0:
            msg["scale"] = self.weight * msg["scale"]


def scaled_programs(model, sites: Iterable[str], weight: float = 1.0
                    ) -> tuple[Callable, Callable, LatentScaleMessenger]:
    """``(model_fn, guide_fn, handler)``: ``model.model`` and ``model.guide`` with the latent
    sites scaled by ``handler.weight``."""
    handler = LatentScaleMessenger(sites, weight)
    return handler(model.model), handler(model.guide), handler


def _elementwise(fn):
    """The elementwise family under ``Independent`` wrappers, or None if there is none."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if fn.event_shape == () else None


class FreeBitsELBO(Trace_ELBO):
    r"""Trace_ELBO with the KL of each latent dimension floored at ``free_bits`` nats.

    The minibatch objective (to maximize) is, for sites scaled by ``s = w N / |B|``
    (KL weight times the data plate's subsample scale),

    .. math::

        \sum_{\text{observed}} \log p(x \mid z)
        - \sum_{\text{latent sites}} s \, |B| \sum_d \max(\lambda, \overline{\mathrm{KL}}_d),

    with :math:`\overline{\mathrm{KL}}_d` the minibatch mean of the per-dimension KL: analytic
    (``torch.distributions.kl_divergence`` of the elementwise families) when ``analytic``,
    else the one-sample estimate :math:`\log q(z_d) - \log p(z_d)` at the guide's draw. Extra
    batch dims (vectorized particles, nested plates) are kept apart, not averaged.
    """

    def __init__(self, free_bits: float, latent_sites: Iterable[str], analytic: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.free_bits = float(free_bits)
        self.latent_sites = tuple(latent_sites)
        self.analytic = analytic

    def _kl_elements(self, name: str, p_site: dict, q_site: dict) -> torch.Tensor:
        p, q = _elementwise(p_site["fn"]), _elementwise(q_site["fn"])
        if p is None or q is None:
            raise ConfigError(f"--free-bits needs latents that factorize over dimensions; the "
                              f"prior or guide of site {name!r} does not")
        if self.analytic:
            try:
                return kl_divergence(q, p)
            except NotImplementedError:
                pass
        value = q_site["value"]
        return q.log_prob(value) - p.log_prob(value)

    def _free_bits_term(self, name: str, p_site: dict, q_site: dict) -> torch.Tensor:
        kl = self._kl_elements(name, p_site, q_site)
        event_dim = q_site["fn"].event_dim
        frames = [f for f in p_site["cond_indep_stack"] if f.name == "data"]
        if not frames:
            raise ConfigError(f"--free-bits averages over the 'data' plate; site {name!r} is "
                              "not in it")
        dim = frames[0].dim - event_dim
        batch = kl.shape[dim] if -dim <= kl.dim() else 1
        kl_mean = kl.mean(dim=dim) if -dim <= kl.dim() else kl
        return p_site["scale"] * batch * kl_mean.clamp(min=self.free_bits).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The free-bits loss as a tensor, without a host read (the fast engine's path; it is
        its own surrogate). Trace_ELBO's reads the value back twice and adds ``warn_if_nan``;
        a NaN loss is caught by the training loop's guard instead."""
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._surrogate_loss(model_trace, guide_trace)
        return loss / self.num_particles

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        loss = self._surrogate_loss(model_trace, guide_trace)
        return loss.detach().item(), loss

    def _surrogate_loss(self, model_trace, guide_trace) -> torch.Tensor:
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if name in self.latent_sites:
                elbo = elbo - self._free_bits_term(name, site, guide_trace.nodes[name])
            elif site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and name not in self.latent_sites and \
                    not site["is_observed"]:
                raise ConfigError(f"--free-bits: guide site {name!r} is not one of the model's "
                                  f"latent_sites {self.latent_sites}")
        return -elbo

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The free-bits objective's estimate (Trace_ELBO's ``loss`` would give the ELBO)."""
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
