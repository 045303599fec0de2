"""Token cross-entropy with loss weights (f32)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def weighted_cross_entropy(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
  """logits [B, T, V], targets [B, T] int, weights [B, T] -> (mean loss over weight, weight sum)."""
  logits = logits.astype(jnp.float32)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  nll = logz - target_logit
  total = jnp.sum(weights)
  return jnp.sum(nll * weights) / jnp.maximum(total, 1.0), total
