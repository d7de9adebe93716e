r"""A Gaussian mixture with K components in D dimensions, its assignment summed out exactly.

Model::

    c_n ~ Categorical(pi)                      pi learned (softmax of logits) or uniform
    x_n | c_n ~ N(mu_{c_n}, Sigma_{c_n})       Sigma full (Cholesky factor) or diagonal

so the marginal is a finite sum, :math:`\log p(x_n) = \log \sum_k \pi_k
\mathcal{N}(x_n; \mu_k, \Sigma_k)` (:meth:`GMM.log_marginal`). The assignment is marked for
parallel enumeration in both programs, and the guide's ``q(c_n | x_n)`` is the exact posterior
(the responsibilities :math:`r_{nk} \propto \pi_k \mathcal{N}(x_n; \mu_k, \Sigma_k)`, held
constant: the E-step). Under :class:`pyro.infer.TraceEnum_ELBO` (objective ``enum``) the sum
over c is exact, the ELBO equals :math:`\sum_n \log p(x_n)` and its gradient is
:math:`\sum_n \mathbb{E}_{r_n}[\nabla \log p(x_n, c)] = \nabla \sum_n \log p(x_n)` (Fisher's
identity): SVI maximizes the exact marginal likelihood, the parameters are point estimates
(maximum likelihood; the point-mass guide of the parameters is the module itself).
:meth:`GMM.assignments` runs :func:`pyro.infer.infer_discrete` for the MAP cluster of each point.

With ``priors=True`` (diagonal covariances) the parameters are latent (Bayesian GMM)::

    pi ~ Dirichlet(1)                           (when weights are learned)
    mu_{1,0} ~ N(0, s),  mu_{k+1,0} - mu_{k,0} ~ HalfNormal(s)   means ordered along axis 0
    mu_{k,1:} ~ N(0, s),  sigma_{k,d} ~ LogNormal(0, 1)

The ordering of the first coordinate removes label switching, so NUTS chains mix over one
mode and R-hat means something. Its guide is mean-field (Dirichlet, Normal, LogNormal) with
the exact ``q(c | x, theta)`` given the sampled parameters. These global sites sit outside
the data plate, so the per-data-point bounds of :mod:`pyro_vae.evaluate` do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, DataError, check_choice, check_positive
from pyro_vae.models.base import LatentModel
from pyro_vae.nn import inv_softplus

COVARIANCES = ("full", "diag")
WEIGHTS = ("learned", "uniform")
ENUM = {"enumerate": "parallel"}


@dataclass
class GMMConfig:
    num_components: int = 3
    covariance: str = "full"
    weights: str = "learned"
    priors: bool = False
    prior_scale: float = 10.0

    def __post_init__(self) -> None:
        check_positive("num_components", self.num_components)
        check_choice("covariance", self.covariance, COVARIANCES)
        check_choice("weights", self.weights, WEIGHTS)
        check_positive("prior_scale", self.prior_scale, integer=False)
        if self.priors and self.covariance != "diag":
            raise ConfigError("the Bayesian GMM (priors) has diagonal covariances only: "
                              "use --covariance diag")



class GMM(LatentModel):
    """Gaussian mixture; maximum likelihood, or Bayesian with a mean-field guide."""

    name = "gmm"
    config_class = GMMConfig
    latent_sites = ("assignment",)
    has_discrete_latents = True
    default_objective = "enum"
    data_kinds = ("real",)

    def __init__(self, config: GMMConfig, data_shape: tuple[int, ...]):
        super().__init__(config, data_shape)
        if len(data_shape) != 1:
            raise DataError(f"the GMM takes vectors, got points of shape {data_shape}; "
                            "try --dataset gmm-2d")
        K, D = config.num_components, data_shape[0]
        self.K, self.D = K, D
        self.learn_weights = config.weights == "learned"
        if config.priors:
            self.latent_sites = (*self._global_sites(), "assignment")
            self.q_conc = nn.Parameter(torch.zeros(K))  # softplus -> Dirichlet concentration
            self.q_loc_first = nn.Parameter(torch.zeros(2))  # loc, raw scale
            self.q_gaps = nn.Parameter(torch.zeros(2, max(K - 1, 1)))
            self.q_loc_rest = nn.Parameter(torch.zeros(2, K, max(D - 1, 1)))
            self.q_scale = nn.Parameter(torch.zeros(2, K, D))
            return
        self.logits = nn.Parameter(torch.zeros(K)) if self.learn_weights else None
        self.locs = nn.Parameter(torch.randn(K, D))
        self.raw_diag = nn.Parameter(torch.zeros(K, D))  # scales: softplus(raw) + 1e-3
        if config.covariance == "full":
            self.raw_offdiag = nn.Parameter(torch.zeros(K, D, D))

    # -- parameters ----------------------------------------------------------------------
    def _global_sites(self) -> tuple[str, ...]:
        sites = ("weights",) if self.learn_weights else ()
        sites += ("loc_first",) + (("loc_gaps",) if self.K > 1 else ())
        return sites + (("loc_rest",) if self.D > 1 else ()) + ("scale",)

    def _weights_logits(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is not None:
            return weights.log()
        if self.learn_weights and not self.config.priors:
            return F.log_softmax(self.logits, -1)
        return torch.full((self.K,), -torch.log(torch.tensor(float(self.K))).item(),
                          device=self.device)

    def scale_tril(self) -> torch.Tensor:
        """Cholesky factors of the K covariances (ML mode), shape (K, D, D)."""
        diag = F.softplus(self.raw_diag) + 1e-3
        tril = torch.diag_embed(diag)
        if self.config.covariance == "full":
            tril = tril + self.raw_offdiag.tril(-1)
        return tril

    def parameters_dict(self) -> dict[str, torch.Tensor]:
        """Weights, means and covariances (ML mode; the guide's means in Bayesian mode)."""
        if self.config.priors:
            p = self._guide_means()
            cov = torch.diag_embed(p["scale"] ** 2)
            return {"weights": p["weights"], "means": p["locs"], "covariances": cov}
        tril = self.scale_tril()
        return {"weights": self._weights_logits().exp(), "means": self.locs,
                "covariances": tril @ tril.transpose(-1, -2)}

    def _component(self, locs, tril_or_scale):
        if self.config.priors or self.config.covariance == "diag":
            scale = tril_or_scale if self.config.priors else tril_or_scale.diagonal(0, -2, -1)
            return dist.Normal(locs, scale).to_event(1)
        return dist.MultivariateNormal(locs, scale_tril=tril_or_scale)

    def _component_log_probs(self, x, logits, locs, scales):
        """log pi_k + log N(x_n; mu_k, Sigma_k), shape (N, K)."""
        comp = self._component(locs, scales)
        return logits + comp.log_prob(x.unsqueeze(-2))

    # -- Bayesian mode: priors and mean-field guide -----------------------------------------
    def _sample_globals(self, x):
        s, K, D = self.config.prior_scale, self.K, self.D
        zero = x.new_zeros(())
        w = (pyro.sample("weights", dist.Dirichlet(x.new_ones(K))) if self.learn_weights
             else None)
        first = pyro.sample("loc_first", dist.Normal(zero, s))
        firsts = first.unsqueeze(-1).expand(K)
        if K > 1:
            gaps = pyro.sample("loc_gaps", dist.HalfNormal(s * x.new_ones(K - 1)).to_event(1))
            firsts = first + torch.cat([zero.unsqueeze(-1), gaps.cumsum(-1)])
        locs = firsts.unsqueeze(-1)
        if D > 1:
            rest = pyro.sample("loc_rest", dist.Normal(x.new_zeros(K, D - 1), s).to_event(2))
            locs = torch.cat([locs, rest], -1)
        scale = pyro.sample("scale", dist.LogNormal(x.new_zeros(K, D), 1.0).to_event(2))
        return w, locs, scale

    def guide_globals(self, x):
        """The mean-field guide of the global sites (Bayesian mode; the NUTS comparison draws
        from it)."""
        K, D = self.K, self.D

        def sd(raw):
            return F.softplus(raw - 2.0) + 1e-4  # starts small: 0.13

        if self.learn_weights:
            pyro.sample("weights", dist.Dirichlet(F.softplus(self.q_conc) * 10 + 1e-2))
        pyro.sample("loc_first", dist.Normal(self.q_loc_first[0], sd(self.q_loc_first[1])))
        if K > 1:
            pyro.sample("loc_gaps", dist.LogNormal(self.q_gaps[0], sd(self.q_gaps[1]))
                        .to_event(1))
        if D > 1:
            pyro.sample("loc_rest", dist.Normal(self.q_loc_rest[0], sd(self.q_loc_rest[1]))
                        .to_event(2))
        pyro.sample("scale", dist.LogNormal(self.q_scale[0], sd(self.q_scale[1])).to_event(2))

    def _guide_means(self) -> dict[str, torch.Tensor]:
        """Posterior means of the weights, means and scales under the mean-field guide."""
        with torch.no_grad(), poutine.block():
            tr = poutine.trace(self.guide_globals).get_trace(self.q_conc)
        mean = {n: s["fn"].mean for n, s in tr.nodes.items() if s["type"] == "sample"}
        weights = mean.get("weights", torch.full((self.K,), 1.0 / self.K, device=self.device))
        first = mean["loc_first"]
        firsts = first + torch.cat([first.new_zeros(1), mean["loc_gaps"].cumsum(-1)]) \
            if self.K > 1 else first.expand(1)
        locs = firsts.unsqueeze(-1)
        if self.D > 1:
            locs = torch.cat([locs, mean["loc_rest"]], -1)
        return {"weights": weights, "locs": locs, "scale": mean["scale"]}

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, iterations: int = 10) -> None:
        """k-means++ seeding and a few Lloyd steps for the means; scales from the clusters.

        Called by :func:`pyro_vae.train.train` before a fresh run (torch's global RNG, so a
        seeded run is repeatable). Bayesian mode: the guide's locations start there instead.
        """
        x = x.reshape(len(x), -1)
        distinct = torch.unique(x, dim=0).shape[0]
        if distinct < self.K:  # k-means++ would draw from an all-zero distance vector
            raise DataError(f"a mixture of {self.K} components needs at least {self.K} distinct "
                            f"training points to start from, got {distinct}; use a smaller "
                            "--num-components or more data")
        centers = x[torch.randint(len(x), (1,), device=x.device)]
        for _ in range(1, self.K):
            d2 = torch.cdist(x, centers).min(1).values ** 2
            centers = torch.cat([centers, x[torch.multinomial(d2 / d2.sum(), 1)]])
        for _ in range(iterations):
            label = torch.cdist(x, centers).argmin(1)
            for k in range(self.K):
                if (label == k).any():
                    centers[k] = x[label == k].mean(0)
        centers = centers[centers[:, 0].argsort()]
        label = torch.cdist(x, centers).argmin(1)
        std = torch.stack([x[label == k].std(0) if (label == k).sum() > 1 else x.std(0)
                           for k in range(self.K)]).clamp_min(1e-2)
        if self.config.priors:
            self.q_loc_first[0] = centers[0, 0]
            if self.K > 1:
                self.q_gaps[0] = centers[:, 0].diff().clamp_min(1e-2).log()
            if self.D > 1:
                self.q_loc_rest[0] = centers[:, 1:]
            self.q_scale[0] = std.log()
            return
        self.locs.copy_(centers)
        self.raw_diag.copy_(inv_softplus(std - 1e-3))

    # -- the two programs -----------------------------------------------------------------
    def _theta(self, x):
        """(log weights, means, scale_tril or scales): sampled in Bayesian mode."""
        if self.config.priors:
            w, locs, scale = self._sample_globals(x)
            return self._weights_logits(w), locs, scale
        return self._weights_logits(), self.locs, self.scale_tril()

    def model(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        logits, locs, scales = self._theta(x)
        with self.data_plate(x, num_data):
            c = pyro.sample("assignment", dist.Categorical(logits=logits), infer=ENUM)
            pyro.sample("x", self._component(locs[c], scales[c]), obs=x)

    def guide(self, x, y=None, num_data=None):
        pyro.module(self.name, self)
        if self.config.priors:
            tr = poutine.trace(self.guide_globals).get_trace(x)  # recorded by SVI's trace too
            with poutine.block(), poutine.condition(data={n: s["value"] for n, s in
                                                         tr.nodes.items()
                                                         if s["type"] == "sample"}):
                logits, locs, scales = self._theta(x)
        else:
            logits, locs, scales = self._theta(x)
        resp = self._component_log_probs(x, logits, locs, scales).detach()
        with self.data_plate(x, num_data):
            pyro.sample("assignment", dist.Categorical(logits=resp), infer=ENUM)

    def collapsed_model(self, x, y=None, num_data=None):
        """:meth:`model` with the assignment summed out by hand (``pyro.factor`` of
        log p(x_n | theta)): the same posterior over the parameters, no enumeration machinery
        (NUTS runs several times faster on it)."""
        pyro.module(self.name, self)
        logits, locs, scales = self._theta(x)
        with self.data_plate(x, num_data):
            pyro.factor("x_marginal", torch.logsumexp(
                self._component_log_probs(x, logits, locs, scales), -1))

    # -- exact quantities -------------------------------------------------------------------
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_n) for each row of ``x`` (ML mode)."""
        if self.config.priors:
            raise ConfigError("the Bayesian GMM's log p(x_n) depends on the whole data set "
                              "through the parameters; it has no per-point closed form")
        return torch.logsumexp(self._component_log_probs(x, *self._theta(x)), -1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(c_n = k | x_n), shape (N, K) (ML mode, or at the guide's means)."""
        if self.config.priors:
            p = self._guide_means()
            lp = self._component_log_probs(x, p["weights"].log(), p["locs"], p["scale"])
        else:
            lp = self._component_log_probs(x, *self._theta(x))
        return F.softmax(lp, -1)

    @torch.no_grad()
    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """The MAP component of each point, by :func:`pyro.infer.infer_discrete` (ML mode)."""
        model = self.model
        if self.config.priors:
            p = self._guide_means()
            data = {"loc_first": p["locs"][0, 0], "scale": p["scale"]}
            if self.learn_weights:
                data["weights"] = p["weights"]
            if self.K > 1:
                data["loc_gaps"] = p["locs"][:, 0].diff()
            if self.D > 1:
                data["loc_rest"] = p["locs"][:, 1:]
            model = poutine.condition(model, data=data)
        decoded = infer_discrete(model, first_available_dim=-2, temperature=0)
        trace = poutine.trace(decoded).get_trace(x)
        return trace.nodes["assignment"]["value"]

    # -- what pictures use ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, num, y=None):
        """``num`` draws x ~ p(x) (a mixture's mean would show only K points)."""
        p = self.parameters_dict()
        c = torch.multinomial(p["weights"], num, replacement=True)
        # the Cholesky factors themselves: factorizing tril @ tril.T again fails in float32
        # once a scale is large or tiny (a large --lr), although the factor is valid
        trils = (torch.diag_embed(self._guide_means()["scale"]) if self.config.priors
                 else self.scale_tril())
        tril = trils[c]
        eps = torch.randn(num, self.D, 1, device=self.device)
        return p["means"][c] + (tril @ eps).squeeze(-1)

    def encode(self, x, y=None):
        r = self.responsibilities(x)
        return r, (r * (1 - r)).sqrt()

    @torch.no_grad()
    def reconstruct(self, x, y=None):
        return self.responsibilities(x) @ self.parameters_dict()["means"]
