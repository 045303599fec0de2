"""Training-free FFN unit selection: GRIFFIN per prompt, calibration-static, random.

GRIFFIN (Dong et al. 2024; docs/method.md §9): run the *full* model on the prompt; per layer take
the SwiGLU activations Z = silu(x W_gate) * (x W_up) over the prompt's tokens [T, F], divide each
token's row by its L2 norm, score unit i by the L2 norm of column i, keep the top k (same k in
every layer). Padding tokens never count. The activations come from the model's
`intermediates/.../ffn_act` sow (`MaskedSwiGLU`); this module only reduces them.

Calibration-static: one mask for every input, the top k of the *mean* GRIFFIN score over a
calibration set - the training-free static baseline. Random: k units per layer drawn uniformly,
the floor every method must clear.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder

_PAD_MULTIPLE = 16  # rows are right-padded to a multiple of this to limit recompiles


@functools.lru_cache(maxsize=8)
def _scores_fn(cfg_key: str):
  cfg = LlamaConfig(**json.loads(cfg_key)).replace(remat="none")

  def fn(params, ids, valid, counted):
    _, state = Decoder(cfg).apply(
      {"params": params},
      ids,
      attention_mask=valid,
      compute_logits=False,
      mutable=["intermediates"],
    )
    (z,) = state["intermediates"]["layers"]["mlp"]["ffn_act"]  # [L, B, T, F] (scan axis first)
    z = z.astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    z = z * counted[None, :, :, None]
    return jnp.sqrt(jnp.sum(z * z, axis=2)).transpose(1, 0, 2)  # [B, L, F]

  return jax.jit(fn)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
  """Token rows -> right-padded ids [B, T] and validity [B, T] (T a multiple of 16)."""
  if not rows or any(len(r) == 0 for r in rows):
    raise ValueError("GRIFFIN needs at least one prompt, each of at least one token")
  width = -(-max(map(len, rows)) // _PAD_MULTIPLE) * _PAD_MULTIPLE
  ids = np.full((len(rows), width), pad_id, np.int32)
  valid = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    ids[i, : len(r)] = r
    valid[i, : len(r)] = True
  return ids, valid


def griffin_scores(
  cfg: LlamaConfig,
  llm_params: Any,
  rows: Sequence[Sequence[int]],
  *,
  pad_id: int = 0,
  batch_size: int = 8,
  count_from: Sequence[int] | None = None,
) -> np.ndarray:
  """GRIFFIN unit scores [B, L, F] (f32) of each prompt's token ids under the full model.

  `count_from[b]`: only row b's tokens from that position on are scored (the model still reads
  the whole row as context), e.g. the chunk a mask will serve after the chunk that chose it.
  """
  if count_from is not None and len(count_from) != len(rows):
    raise ValueError(f"count_from has {len(count_from)} entries for {len(rows)} rows")
  if count_from is not None and any(not 0 <= c < len(r) for c, r in zip(count_from, rows)):
    raise ValueError("count_from: every row needs a scored token (0 <= count_from[b] < len)")
  fn = _scores_fn(json.dumps(cfg.to_dict(), sort_keys=True))
  out = []
  for lo in range(0, len(rows), batch_size):
    ids, valid = pad_rows(rows[lo : lo + batch_size], pad_id)
    counted = valid.copy()
    if count_from is not None:
      for i, c in enumerate(count_from[lo : lo + batch_size]):
        counted[i, :c] = False
    out.append(
      np.asarray(fn(llm_params, jnp.asarray(ids), jnp.asarray(valid), jnp.asarray(counted)))
    )
  return np.concatenate(out)


def top_units(scores: np.ndarray, k: int) -> np.ndarray:
  """Scores [..., L, F] -> sorted indices [..., L, k] of the k largest per layer (ties: lower
  index first)."""
  f = scores.shape[-1]
  if not 1 <= k <= f:
    raise ValueError(f"k={k} must be in [1, {f}] (the scores have {f} units per layer)")
  order = np.argsort(-np.asarray(scores, np.float64), axis=-1, kind="stable")[..., :k]
  return np.sort(order, axis=-1).astype(np.int32)


def griffin_units(
  cfg: LlamaConfig,
  llm_params: Any,
  rows: Sequence[Sequence[int]],
  k: int,
  *,
  pad_id: int = 0,
  batch_size: int = 8,
) -> np.ndarray:
  """GRIFFIN's kept units [B, L, k] per prompt (token ids)."""
  scores = griffin_scores(cfg, llm_params, rows, pad_id=pad_id, batch_size=batch_size)
  return top_units(scores, k)


def calibration_scores(
  cfg: LlamaConfig,
  llm_params: Any,
  rows: Sequence[Sequence[int]],
  *,
  pad_id: int = 0,
  batch_size: int = 8,
) -> np.ndarray:
  """Mean GRIFFIN score [L, F] over a calibration set (each row weighted equally)."""
  return griffin_scores(cfg, llm_params, rows, pad_id=pad_id, batch_size=batch_size).mean(0)


def calibration_units(
  cfg: LlamaConfig,
  llm_params: Any,
  rows: Sequence[Sequence[int]],
  k: int,
  *,
  pad_id: int = 0,
  batch_size: int = 8,
) -> np.ndarray:
  """The calibration-static mask: kept units [L, k] from the mean score over `rows`."""
  return top_units(
    calibration_scores(cfg, llm_params, rows, pad_id=pad_id, batch_size=batch_size), k
  )


def random_units(num_layers: int, d_ff: int, k: int, seed: int = 0) -> np.ndarray:
  """k distinct units per layer drawn uniformly: sorted indices [L, k]."""
  if not 1 <= k <= d_ff:
    raise ValueError(f"k={k} must be in [1, d_ff={d_ff}]")
  rng = np.random.default_rng(seed)
  return np.sort(
    np.stack([rng.choice(d_ff, size=k, replace=False) for _ in range(num_layers)]), axis=-1
  ).astype(np.int32)


def units_to_mask(units: np.ndarray, d_ff: int) -> np.ndarray:
  """Kept indices [..., L, k] -> binary mask [..., L, F] (f32)."""
  units = np.asarray(units)
  mask = np.zeros(units.shape[:-1] + (d_ff,), np.float32)
  np.put_along_axis(mask, units, 1.0, axis=-1)
  return mask
