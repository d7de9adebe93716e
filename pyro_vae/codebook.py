r"""The codes of a vector-quantized model: codebook use and the bounds on -log p(x) its priors
imply (:mod:`pyro_vae.models.vqvae`; the ``codebook`` evaluation of :mod:`pyro_vae.metrics`).

A model serves these measures when it has the capability methods ``code_indices(x) -> (N, L)``
(the codebook entry of each position), ``reconstruction_log_prob(x) -> (N,)``
(:math:`\log p(x \mid z_q(x))`), ``prior_log_prob(codes) -> (N,)`` (:math:`\log p(k)`) and the
attributes ``num_codes`` (K) and ``has_learned_prior``.

* **Codebook use** over the test codes :math:`k_{n,i}`: the share of the K entries that occur
  at least once, and the perplexity :math:`\exp H(\bar p)` of their average one-hot
  :math:`\bar p_k = \frac{1}{NL}\sum_{n,i} [k_{n,i} = k]` (K when every entry is used
  equally, 1 when one entry takes every position).
* **Bounds.** With the point mass :math:`q(k \mid x) = \delta_{k(x)}`, the ELBO is
  :math:`\log p(x) \ge \log p(x \mid z_q(x)) + \log p(k(x))`, so

  .. math::

      -\log p(x) \le \underbrace{-\log p(x \mid z_q(x))}_{\text{reconstruction NLL}}
      + \begin{cases} L \log K & \text{uniform codes} \\
                      -\log p_\psi(k(x)) & \text{a learned prior,} \end{cases}

  in nats per test point and, for a discrete likelihood, bits per dimension
  (:math:`/ (D \ln 2)`). The learned prior's gain is the paired difference of the two bounds
  per test point, with its standard error.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.evaluate import bits_per_dim
from pyro_vae.importance import stderr_across_points


def can_quantize(model) -> bool:
    """Whether ``model`` serves :func:`code_measures` (the capability methods above)."""
    return all(callable(getattr(model, name, None)) for name in
               ("code_indices", "reconstruction_log_prob", "prior_log_prob"))


def usage(codes: torch.Tensor, num_codes: int) -> dict:
    """Codebook use of the code grids ``codes`` (any shape): counts per entry, the share of
    entries used, and the perplexity of the average one-hot."""
    counts = torch.bincount(codes.flatten(), minlength=num_codes)
    p = counts.double() / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return {"code_counts": counts.tolist(),
            "codes_used": int((counts > 0).sum()),
            "codebook_usage": float((counts > 0).double().mean()),
            "codebook_perplexity": float(torch.exp(entropy))}


@torch.no_grad()
def code_measures(model, x: torch.Tensor, chunk: int = 500) -> dict:
    """Codebook use and the bounds of the module docstring on the points ``x``."""
    model.eval()
    codes, recon, prior = [], [], []
    for start in range(0, x.shape[0], chunk):
        xb = x[start:start + chunk]
        k = model.code_indices(xb)
        codes.append(k)
        recon.append(model.reconstruction_log_prob(xb).double())
        prior.append(model.prior_log_prob(k).double())
    codes, recon, prior = torch.cat(codes), torch.cat(recon), torch.cat(prior)
    positions = codes.shape[-1]
    uniform = -recon + positions * math.log(model.num_codes)
    out = usage(codes, model.num_codes) | {
        "codebook_size": model.num_codes, "code_positions": positions,
        "test_recon_nll": float(recon.mean().neg()),
        "test_nll_uniform_prior": float(uniform.mean()),
        "test_nll_uniform_prior_stderr": stderr_across_points(uniform)}
    learned = None
    if model.has_learned_prior:
        learned = -recon - prior
        gain = uniform - learned
        out |= {"test_nll_learned_prior": float(learned.mean()),
                "test_nll_learned_prior_stderr": stderr_across_points(learned),
                "test_prior_gain": float(gain.mean()),
                "test_prior_gain_stderr": stderr_across_points(gain)}
    if model.discrete_likelihood:
        out["test_nll_uniform_prior_bpd"] = bits_per_dim(-float(uniform.mean()),
                                                         model.scored_dims)
        if learned is not None:
            out["test_nll_learned_prior_bpd"] = bits_per_dim(-float(learned.mean()),
                                                             model.scored_dims)
    return out
