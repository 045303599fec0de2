"""FFN unit masks: exact SoftTopK (implicit gradient), CoDA reference, hard top-k, HardConcrete.

Shapes: masks are per row over the last axis (units). In the model a score tensor is
``[B, L, d_ff]`` (logical axes ``act_batch, None, act_mlp``) and every function here treats the
leading axes as batch dimensions, so the same code serves ``[n]``, ``[L, n]`` and ``[B, L, n]``.

SoftTopK (docs/method.md §4): for one row ``s`` in R^n, budget ``k`` and temperature ``eps``

    lam = argmax_l  s.l + eps*H(l)   s.t.  sum(l) = k,  0 <= l_i <= 1

has the closed form ``lam_i = min(1, exp((s_i - tau)/eps))``. With the scores sorted
descending and ``r`` of them saturated, ``tau_r = eps*(logsumexp(s_(r+1..n)/eps) - log(k-r))``.
One can show ``tau_r >= tau*`` for every ``r`` in ``0..k-1`` with equality at the true number of
saturated entries, so ``tau* = min_r tau_r``: no consistency search and no branch.

HardConcrete and the Lagrangian budget term follow Louizos et al. / Sheared-LLaMA
(docs/method.md §6).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# HardConcrete stretch/temperature constants (Louizos et al. 2018; Sheared-LLaMA).
HC_BETA: float = 2.0 / 3.0
HC_LIMIT_L: float = -0.1
HC_LIMIT_R: float = 1.1
_HC_U_EPS: float = 1e-6  # u ~ U(0,1) is clipped to [eps, 1-eps] so logit(u) stays finite.


# --------------------------------------------------------------------------- validation


def _check_scores(scores: Array, name: str = "scores") -> int:
  if jnp.ndim(scores) < 1:
    raise ValueError(
      f"{name} must have at least 1 dim (units on the last axis), got shape {jnp.shape(scores)}"
    )
  return int(jnp.shape(scores)[-1])


def _check_k(scores: Array, k: Any, name: str = "scores") -> int:
  n = _check_scores(scores, name)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise TypeError(f"k must be a static Python int, got {type(k).__name__} ({k!r})")
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be >= 1, got k={k} for {name} of shape {jnp.shape(scores)}")
  if k > n:
    raise ValueError(
      f"k={k} exceeds the number of units n={n} on the last axis of {name} "
      f"with shape {jnp.shape(scores)}"
    )
  return k


def _check_eps(eps: Any, name: str = "eps") -> None:
  """Raises for a concrete eps <= 0; a traced eps cannot be checked and is accepted."""
  try:
    value = np.asarray(eps, dtype=np.float64)
  except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  if value.ndim != 0:
    raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
  if not value > 0:
    raise ValueError(f"{name} must be > 0, got {name}={float(value)}")


def _compute_dtype(x: Array) -> jnp.dtype:
  """f32 for low-precision inputs, f64 only if the input is f64 (tests in x64 mode)."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


# --------------------------------------------------------------------------- hard top-k


def hard_topk(scores: Array, k: int) -> Array:
  """Binary mask with exactly ``k`` ones per row at the ``k`` largest scores.

  Args:
    scores: [..., n] real scores.
    k: static number of units to keep, 1 <= k <= n.
  Returns:
    [..., n] mask in the scores' float dtype (f32 for integer input), values in {0, 1}. Ties at
    the k-th value are broken towards the lower index, as ``lax.top_k`` does. O(n) memory
    (threshold + cumulative count, no one-hot [k, n] and no scatter). No gradient flows.
  """
  k = _check_k(scores, k)
  scores = jax.lax.stop_gradient(jnp.asarray(scores))
  out_dtype = scores.dtype if jnp.issubdtype(scores.dtype, jnp.floating) else jnp.float32
  kth = jax.lax.top_k(scores, k)[0][..., k - 1 : k]  # [..., 1]
  above = scores > kth
  tied = scores == kth
  n_above = jnp.sum(above, axis=-1, keepdims=True, dtype=jnp.int32)
  tie_rank = jnp.cumsum(tied, axis=-1, dtype=jnp.int32)  # 1-based rank among ties
  keep = above | (tied & (tie_rank <= k - n_above))
  return keep.astype(out_dtype)


def topk_indices(scores: Array, k: int) -> Array:
  """Indices of the ``k`` largest scores per row, sorted ascending (for gathering weights).

  Args:
    scores: [..., n]. k: static, 1 <= k <= n.
  Returns:
    int32 [..., k]; the same set as the ones of ``hard_topk(scores, k)`` (same tie rule).
  """
  k = _check_k(scores, k)
  idx = jax.lax.top_k(jax.lax.stop_gradient(jnp.asarray(scores)), k)[1]
  return jnp.sort(idx, axis=-1).astype(jnp.int32)


# --------------------------------------------------------------------------- exact SoftTopK


def _soft_topk_forward(s: Array, k: int, eps: Array) -> Array:
  """lam [..., n] from scores s [..., n] (compute dtype), static k, scalar eps."""
  s = s - jnp.max(s, axis=-1, keepdims=True)  # shift invariance; all entries <= 0
  s_desc = -jnp.sort(-s, axis=-1)
  # suffix_lse[r] = logsumexp(s_(r+1..n) / eps) for r = 0..k-1 (stable: log-add scan).
  suffix_lse = jax.lax.cumlogsumexp(s_desc / eps, axis=s.ndim - 1, reverse=True)[..., :k]
  free = k - jnp.arange(k, dtype=s.dtype)  # k - r >= 1
  tau_r = eps * (suffix_lse - jnp.log(free))
  tau = jnp.min(tau_r, axis=-1, keepdims=True)
  return jnp.minimum(1.0, jnp.exp((s - tau) / eps))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _soft_topk(s: Array, k: int, eps: Array) -> Array:
  return _soft_topk_forward(s, k, eps)


def _soft_topk_fwd(s: Array, k: int, eps: Array) -> tuple[Array, tuple[Array, Array]]:
  lam = _soft_topk_forward(s, k, eps)
  return lam, (lam, eps)


def _soft_topk_bwd(k: int, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
  """Implicit-function VJP, O(n) per row.

  On the unsaturated set U (lam < 1): d lam_i/d s_j = (lam_i/eps)(delta_ij - lam_j/sum_U lam),
  d lam_i/d eps = (lam_i/eps)(-log lam_i + sum_U lam log lam / sum_U lam); zero off U.
  """
  del k
  lam, eps = res
  lam_u = jnp.where(lam < 1.0, lam, 0.0)
  denom = jnp.sum(lam_u, axis=-1, keepdims=True)
  safe = jnp.where(denom > 0, denom, 1.0)  # all saturated (k == n): gradient is zero
  g_s = (lam_u / eps) * (g - jnp.sum(g * lam_u, axis=-1, keepdims=True) / safe)
  log_lam = jnp.log(jnp.where(lam_u > 0, lam_u, 1.0))  # 0 where lam_u == 0 (weight is 0)
  mean_log = jnp.sum(lam_u * log_lam, axis=-1, keepdims=True) / safe
  g_eps = jnp.sum(g * (lam_u / eps) * (mean_log - log_lam))
  return g_s, g_eps.astype(eps.dtype)


_soft_topk.defvjp(_soft_topk_fwd, _soft_topk_bwd)


def soft_topk(scores: Array, k: int, eps: float | Array) -> Array:
  """Exact entropic soft top-k: ``lam_i = min(1, exp((s_i - tau)/eps))`` with ``sum lam = k``.

  Args:
    scores: [..., n] (e.g. predictor scores [B, L, d_ff]); any leading batch dims.
    k: static budget, 1 <= k <= n.
    eps: temperature > 0 (Python float or a traced scalar, e.g. an annealing schedule).
  Returns:
    lam [..., n] in f32 (f64 for f64 input), each row summing to k, values in (0, 1].
    Gradients (w.r.t. scores and eps) use the implicit function theorem, O(n) memory.
  """
  _check_k(scores, k)
  _check_eps(eps)
  scores = jnp.asarray(scores)
  dtype = _compute_dtype(scores)
  return _soft_topk(scores.astype(dtype), int(k), jnp.asarray(eps, dtype))


def soft_topk_mask(scores: Array, k: int, eps: float | Array) -> Array:
  """Training mask ``lam * Top(lam, k)``: exactly k non-zeros per row, values in (0, 1].

  Args/shapes as :func:`soft_topk`. The hard selection is taken on ``scores`` (lam is a
  non-decreasing function of the scores, so the kept set is the same as ``Top(lam, k)`` but
  free of ties between saturated lam == 1 entries); the gradient flows through lam only.
  """
  lam = soft_topk(scores, k, eps)
  return lam * hard_topk(scores, k).astype(lam.dtype)


# --------------------------------------------------------------------------- CoDA reference


def coda_soft_topk(
  scores: Array,
  k: int,
  eps: float,
  num_iters: int = 20,
  eps_start: float | None = None,
  anneal: float = 0.7,
) -> Array:
  """CoDA dual iteration for the same problem (reference for tests; differentiable by autodiff).

  a <- eps*ln k - eps*logsumexp((s+b)/eps);  b <- min(-s-a, 0);  lam = exp((s+a+b)/eps).

  Args:
    scores: [..., n]. k: static budget. eps: final temperature > 0.
    num_iters: number of dual steps (a ``lax.scan``; reverse-mode stores every step).
    eps_start: if given, step t uses ``max(eps, eps_start * anneal**t)``; else constant eps.
  Returns:
    lam [..., n] after ``num_iters`` steps (approximate; converges to :func:`soft_topk`).
  """
  k = _check_k(scores, k)
  _check_eps(eps)
  if eps_start is not None:
    _check_eps(eps_start, "eps_start")
  if num_iters < 1:
    raise ValueError(f"num_iters must be >= 1, got {num_iters}")
  scores = jnp.asarray(scores)
  s = scores.astype(_compute_dtype(scores))
  s = s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  if eps_start is None:
    sched = np.full((num_iters,), eps, dtype=np.float64)
  else:
    sched = np.maximum(eps, eps_start * anneal ** np.arange(num_iters, dtype=np.float64))
  sched = jnp.asarray(sched, dtype=s.dtype)
  log_k = jnp.log(jnp.asarray(k, s.dtype))

  def step(carry: tuple[Array, Array], e: Array) -> tuple[tuple[Array, Array], None]:
    _, b = carry
    a = e * log_k - e * jax.nn.logsumexp((s + b) / e, axis=-1, keepdims=True)
    b = jnp.minimum(-s - a, 0.0)
    return (a, b), None

  init = (jnp.zeros(s.shape[:-1] + (1,), s.dtype), jnp.zeros_like(s))
  (a, b), _ = jax.lax.scan(step, init, sched)
  return jnp.exp((s + a + b) / sched[-1])


# --------------------------------------------------------------------------- HardConcrete


def hard_concrete_sample(
  rng: Array, log_alpha: Array, beta: float = HC_BETA, l: float = HC_LIMIT_L, r: float = HC_LIMIT_R
) -> Array:
  """Reparameterised HardConcrete sample z in [0, 1] with exact zeros and ones.

  Args:
    rng: PRNG key. log_alpha: [..., n] location logits.
  Returns:
    z [..., n] (f32 or wider), differentiable w.r.t. log_alpha.
  """
  log_alpha = jnp.asarray(log_alpha)
  dtype = _compute_dtype(log_alpha)
  u = jax.random.uniform(rng, log_alpha.shape, dtype, minval=_HC_U_EPS, maxval=1.0 - _HC_U_EPS)
  s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha.astype(dtype)) / beta)
  return jnp.clip(s * (r - l) + l, 0.0, 1.0)


def hard_concrete_prob_nonzero(
  log_alpha: Array, beta: float = HC_BETA, l: float = HC_LIMIT_L, r: float = HC_LIMIT_R
) -> Array:
  """P(z > 0) = sigmoid(log_alpha - beta*log(-l/r)), elementwise [..., n]."""
  return jax.nn.sigmoid(jnp.asarray(log_alpha) - beta * np.log(-l / r))


def expected_sparsity(
  log_alpha: Array,
  axis: int | None = -1,
  beta: float = HC_BETA,
  l: float = HC_LIMIT_L,
  r: float = HC_LIMIT_R,
) -> Array:
  """Expected fraction of zeroed units: ``1 - mean(P(z > 0))``.

  Args:
    log_alpha: [..., n]. axis: -1 gives one value per row ([...]); None the global scalar.
  """
  _check_scores(log_alpha, "log_alpha")
  return 1.0 - jnp.mean(hard_concrete_prob_nonzero(log_alpha, beta, l, r), axis=axis)


def hard_concrete_eval_mask(log_alpha: Array, k: int) -> Array:
  """Deterministic eval mask: ones at the k largest log_alpha per row, [..., n] in {0, 1}."""
  return hard_topk(log_alpha, k)


def lagrangian_penalty(s_hat: Array, target: Array, lambda1: Array, lambda2: Array) -> Array:
  """Budget term ``lambda1*(s_hat - t) + lambda2*(s_hat - t)**2`` (Sheared-LLaMA).

  Minimised over model/mask parameters, maximised (gradient ascent) over lambda1, lambda2.
  """
  d = s_hat - target
  return lambda1 * d + lambda2 * d * d


def target_sparsity(step: Array | int, final_target: float, warmup_steps: int) -> Array:
  """Linear ramp of the target sparsity from 0 at step 0 to ``final_target`` at warmup_steps.

  ``step`` may be traced; ``warmup_steps == 0`` means the final target from the start.
  """
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
  step = jnp.asarray(step, jnp.float32)
  if warmup_steps == 0:
    return jnp.full_like(step, final_target)
  return final_target * jnp.clip(step / warmup_steps, 0.0, 1.0)


# --------------------------------------------------------------------------- statistics


def mask_stats(mask: Array) -> dict[str, Array]:
  """Scalar logging statistics of a mask [..., n] (e.g. [B, L, d_ff]); rows = leading axes.

  Returns:
    kept_frac: fraction of non-zero entries; kept_mean: mean value of the non-zero entries;
    kept_count_min / kept_count_max: min/max number of non-zeros over rows (per layer and
    example for a [B, L, F] mask).
  """
  _check_scores(mask, "mask")
  mask = jnp.asarray(mask).astype(jnp.float32)
  nz = mask != 0
  count = jnp.sum(nz, axis=-1)
  total = jnp.sum(count)
  return {
    "kept_frac": jnp.mean(nz.astype(jnp.float32)),
    "kept_mean": jnp.sum(mask) / jnp.maximum(total, 1).astype(jnp.float32),
    "kept_count_min": jnp.min(count),
    "kept_count_max": jnp.max(count),
  }
