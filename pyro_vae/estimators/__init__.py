"""Gradient estimators Pyro lacks, one a module, and the gradient-variance study.

* :class:`~pyro_vae.estimators.vimco.VIMCO_ELBO` -- multi-sample score function (VIMCO);
* :class:`~pyro_vae.estimators.dreg.DReG_IWAE_ELBO` -- doubly reparameterized IWAE gradients;
* :class:`~pyro_vae.estimators.rws.RWS_ELBO` -- reweighted wake-sleep, per data point;
* :class:`~pyro_vae.estimators.baselines.TraceGraphBaselineELBO` -- ``TraceGraph_ELBO`` with a
  baseline chosen by name (none, decaying average, neural);
* :mod:`~pyro_vae.estimators.gradients` -- many gradient draws of one minibatch: mean,
  variance, signal-to-noise ratio;
* :mod:`~pyro_vae.estimators.exact` -- exact ELBO / E[L_k] of a small Bernoulli model by
  enumeration, the ground truth of the tests.
"""

from pyro_vae.estimators.dreg import DReG_IWAE_ELBO
from pyro_vae.estimators.iwae import IWAE_ELBO
from pyro_vae.estimators.rws import RWS_ELBO
from pyro_vae.estimators.vimco import VIMCO_ELBO

__all__ = ["DReG_IWAE_ELBO", "IWAE_ELBO", "RWS_ELBO", "VIMCO_ELBO"]
