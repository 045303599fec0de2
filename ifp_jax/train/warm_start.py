"""Warm start of the masks from calibration statistics instead of the paper's random head init.

`train.warm_start = 'calibration'` (fresh runs only; a resume restores its own state): the full
pretrained LLM reads the first `train.warm_start_rows` rows of the CPT training stream, and the
mean GRIFFIN score of every FFN unit over them (`infer/griffin.py calibration_scores`), z-scored
per layer, becomes the initial mask logits:
- static: `static_log_alpha = hc_init_log_alpha + scale * z`, so the first top-k mask is the
  training-free calibration-static mask and HardConcrete starts as mostly-on as before;
- predictor kinds: the head's output bias = `scale * z` and its output kernel = 0, so at step 0
  every prompt gets the calibration-static mask and training only has to learn the per-prompt
  part (the kernel's gradient is `h^T dL/dscores`, nonzero, so it learns from the first step).
Every host reads the same rows (process 0's slice of the stream), so every host computes the
same initial parameters.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from ifp_jax.model.ifp_model import IFPConfig

WARM_STARTS = ("", "calibration")


def calibration_rows(batches: Iterable[Mapping[str, np.ndarray]], n_rows: int) -> list[list[int]]:
  """The first `n_rows` rows of a batch stream as token lists (only tokens whose loss counts:
  the padding at the end of a packed row is cut)."""
  rows: list[list[int]] = []
  for batch in batches:
    ids, weights = np.asarray(batch["input_ids"]), np.asarray(batch["loss_weights"])
    for r in range(ids.shape[0]):
      n = int(np.nonzero(weights[r])[0][-1]) + 1 if weights[r].any() else 0
      if n:
        rows.append(ids[r, :n].tolist())
      if len(rows) == n_rows:
        return rows
  if not rows:
    raise ValueError("train.warm_start: the CPT stream gave no rows with tokens")
  return rows


def zscore(scores: np.ndarray) -> np.ndarray:
  """[L, F] -> per-layer standardised scores (a constant layer gives zeros)."""
  s = np.asarray(scores, np.float64)
  std = s.std(-1, keepdims=True)
  return ((s - s.mean(-1, keepdims=True)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def warm_start_params(
  ifp: IFPConfig, scores: np.ndarray, scale: float, head_kernel_shape: tuple[int, int]
) -> dict[str, Any]:
  """The parameter sub-trees that replace the random init (the `pretrained` override layout of
  `train/state.init_state`): {'static_log_alpha': [L, F]} or
  {'predictor': {'head_out': {'bias': [L*F], 'kernel': zeros}}}."""
  L, F = ifp.llm.num_hidden_layers, ifp.llm.intermediate_size
  if not ifp.has_masks:
    raise ValueError("train.warm_start: mask_kind='none' has no masks to warm-start")
  if np.shape(scores) != (L, F):
    raise ValueError(f"calibration scores of shape {np.shape(scores)}; the LLM has [L, F]={L, F}")
  z = scale * zscore(scores)
  if not ifp.uses_predictor:
    return {"static_log_alpha": ifp.hc_init_log_alpha + z}
  return {
    "predictor": {
      "head_out": {
        "bias": z.reshape(L * F),
        "kernel": np.zeros(head_kernel_shape, np.float32),
      }
    }
  }


def calibration_warm_start(
  ifp: IFPConfig,
  llm_params: Any,
  batches: Iterable[Mapping[str, np.ndarray]],
  *,
  n_rows: int,
  scale: float,
  batch_size: int = 8,
) -> tuple[dict[str, Any], dict[str, float]]:
  """(parameter overrides, stats) from the LLM's GRIFFIN scores over the stream's first rows."""
  from ifp_jax.infer import griffin

  rows = calibration_rows(batches, n_rows)
  scores = griffin.calibration_scores(ifp.llm, llm_params, rows, batch_size=batch_size)
  overrides = warm_start_params(
    ifp, scores, scale, (ifp.head.hidden, ifp.llm.num_hidden_layers * ifp.llm.intermediate_size)
  )
  stats = {"rows": len(rows), "tokens": int(sum(len(r) for r in rows))}
  return overrides, stats


def merge(pretrained: dict | None, overrides: Mapping[str, Any]) -> dict:
  """`pretrained` with `overrides` merged in (nested dicts; overrides win)."""

  def rec(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for key, value in b.items():
      out[key] = rec(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out

  return rec(dict(pretrained or {}), overrides)
