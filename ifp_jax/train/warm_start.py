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
`train.warm_start = 'griffin'` (predictor kinds): a short distillation of GRIFFIN's per-prompt
selections into the head, so that training starts from masks that already depend on the input.
For each of the first `warm_start_rows` rows and each predictor input c of the row, the target
is the GRIFFIN score of the tokens that input's mask will serve (mask_index == c; the full LLM
reads the row up to them as context), z-scored per layer. The head's first layer keeps its
random init; its output layer is the ridge regression of the targets on the first layer's
activations (closed form, centred: the bias is the mean target, so with a zero kernel it would
be the 'calibration' start). With `model.head_center`, the head's centre is set to the mean
activation, so the kernel's gradient carries only what differs between prompts. The ridge
strength is chosen on a held-out fifth of the inputs by the top-k overlap of the predicted with
the target selection, then refitted on all.

Every host reads the same rows (process 0's slice of the stream), so every host computes the
same initial parameters.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from ifp_jax.model.ifp_model import IFPConfig

WARM_STARTS = ("", "calibration", "griffin")
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # x mean eigenvalue of the centred Gram matrix


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


def distill_examples(
  batches: Iterable[Mapping[str, np.ndarray]], n_rows: int
) -> list[dict[str, Any]]:
  """Per predictor input of the stream's first `n_rows` rows: {'prompt': its token ids,
  'row': the LLM row up to the last token its mask serves, 'count_from': the first of them}."""
  out: list[dict[str, Any]] = []
  rows = 0
  for batch in batches:
    b = {k: np.asarray(v) for k, v in batch.items()}
    for r in range(b["input_ids"].shape[0]):
      if rows == n_rows:
        return out
      rows += 1
      for c in range(b["predictor_ids"].shape[1]):
        served = np.nonzero((b["mask_index"][r] == c) & (b["loss_weights"][r] > 0))[0]
        n = int(b["predictor_lengths"][r, c])
        if served.size == 0 or n < 1:
          continue
        out.append(
          {
            "prompt": b["predictor_ids"][r, c, :n].tolist(),
            "row": b["input_ids"][r, : served[-1] + 1].tolist(),
            "count_from": int(served[0]),
          }
        )
  if not out:
    raise ValueError("train.warm_start='griffin': the stream gave no row with a served chunk")
  return out


def topk_overlap(pred: np.ndarray, target: np.ndarray, k: int) -> float:
  """Mean fraction of the target's top-k units per layer that `pred` also keeps ([N, L, F])."""
  from ifp_jax.infer import griffin

  a = griffin.units_to_mask(griffin.top_units(pred, k), pred.shape[-1])
  b = griffin.units_to_mask(griffin.top_units(target, k), target.shape[-1])
  return float((a * b).sum(-1).mean() / k)


def fit_head_out(
  h: np.ndarray, y: np.ndarray, k: int, num_layers: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
  """Ridge regression of targets y [N, L*F] on activations h [N, H]: (kernel [H, L*F], bias
  [L*F], stats). The strength (x the mean eigenvalue of the centred Gram matrix, RIDGE_GRID) is
  the one whose held-out fifth has the best top-k overlap with the targets; stats report it, that
  overlap and the overlap the bias alone (one mask for all inputs) reaches on the same fifth."""
  h, y = np.asarray(h, np.float64), np.asarray(y, np.float64)
  n = h.shape[0]
  if n < 2:
    raise ValueError(f"train.warm_start='griffin' needs >= 2 predictor inputs, got {n}")

  def fit(idx, lam):
    hm, ym = h[idx].mean(0), y[idx].mean(0)
    hc = h[idx] - hm
    gram = hc.T @ hc
    reg = lam * max(np.trace(gram) / gram.shape[0], 1e-12)
    kernel = np.linalg.solve(gram + reg * np.eye(gram.shape[0]), hc.T @ (y[idx] - ym))
    return kernel, ym - hm @ kernel

  def layers(a):
    return a.reshape(a.shape[0], num_layers, -1)

  order = np.random.default_rng(seed).permutation(n)
  n_val = max(1, n // 5)
  val, fit_idx = order[:n_val], order[n_val:]  # n >= 2, so both are non-empty
  stats: dict[str, float] = {"inputs": float(n), "heldout_inputs": float(n_val)}
  best = None
  for lam in RIDGE_GRID:
    kernel, bias = fit(fit_idx, lam)
    ov = topk_overlap(layers(h[val] @ kernel + bias), layers(y[val]), k)
    stats[f"heldout_overlap_ridge_{lam:g}"] = ov
    if best is None or ov > best[1]:
      best = (lam, ov)
  _, bias_only = fit(fit_idx, RIDGE_GRID[0])
  stats["heldout_overlap_bias_only"] = topk_overlap(
    layers(np.broadcast_to(bias_only, y[val].shape)), layers(y[val]), k
  )
  stats["ridge"], stats["heldout_overlap"] = best
  kernel, bias = fit(np.arange(n), best[0])
  stats["train_overlap"] = topk_overlap(layers(h @ kernel + bias), layers(y), k)
  return kernel.astype(np.float32), bias.astype(np.float32), stats


def griffin_warm_start(
  ifp: IFPConfig,
  llm_params: Any,
  backbone_params: Any,
  batches: Iterable[Mapping[str, np.ndarray]],
  *,
  n_rows: int,
  scale: float,
  seed: int,
  batch_size: int = 8,
) -> tuple[dict[str, Any], dict[str, float]]:
  """(parameter overrides {'predictor': {'head_in', 'head_out'}}, stats): the head distilled
  from GRIFFIN's selections on the stream's first rows (module docstring)."""
  import jax
  import jax.numpy as jnp

  from ifp_jax.infer import griffin
  from ifp_jax.model import predictor

  if not ifp.uses_predictor:
    raise ValueError(
      f"train.warm_start='griffin' distils into a predictor; mask_kind={ifp.mask_kind!r} has "
      "none (use 'calibration')"
    )
  L, F = ifp.llm.num_hidden_layers, ifp.llm.intermediate_size
  examples = distill_examples(batches, n_rows)
  targets = griffin.griffin_scores(
    ifp.llm,
    llm_params,
    [e["row"] for e in examples],
    count_from=[e["count_from"] for e in examples],
    batch_size=batch_size,
  )
  y = np.stack([zscore(t) for t in targets]).reshape(len(examples), L * F)
  head_in = jax.tree.map(
    np.asarray,
    predictor.head_in_init(jax.random.key(seed), ifp.predictor.hidden_size, ifp.head.hidden),
  )
  feats = []
  for lo in range(0, len(examples), batch_size):
    ids, valid = griffin.pad_rows([e["prompt"] for e in examples[lo : lo + batch_size]], 0)
    feats.append(
      np.asarray(
        predictor.backbone_features(
          ifp.predictor, backbone_params, jnp.asarray(ids), jnp.asarray(valid.sum(-1))
        )
      )
    )
  act = predictor.ACTIVATIONS[ifp.head.activation]
  h = np.asarray(act(jnp.asarray(np.concatenate(feats) @ head_in["kernel"] + head_in["bias"])))
  kernel, bias, fit_stats = fit_head_out(h, y, ifp.k, L, seed)
  head_out = {"kernel": scale * kernel, "bias": scale * bias}
  predictor_overrides: dict[str, Any] = {"head_in": head_in, "head_out": head_out}
  if ifp.head.center:  # the same function with the centre taken out: (h - c) W + (b + c W)
    center = h.mean(0).astype(np.float32)
    predictor_overrides["head_center"] = center
    head_out["bias"] = scale * (bias + center @ kernel)
  stats = {
    "rows": len(examples),  # predictor inputs (one per row with 2 chunks)
    "tokens": int(sum(len(e["row"]) - e["count_from"] for e in examples)),
    # How much of the head's input is common to all prompts (1.0 = it carries no per-prompt
    # signal): what a kernel grown from zero by gradient descent learns first.
    "feature_common_fraction": float(
      np.sum(h.mean(0) ** 2) / max(float(np.mean(np.sum(h**2, -1))), 1e-12)
    ),
    **fit_stats,
  }
  return {"predictor": predictor_overrides}, stats


def merge(pretrained: dict | None, overrides: Mapping[str, Any]) -> dict:
  """`pretrained` with `overrides` merged in (nested dicts; overrides win)."""

  def rec(a: dict, b: Mapping) -> dict:
    out = dict(a)
    for key, value in b.items():
      out[key] = rec(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out

  return rec(dict(pretrained or {}), overrides)
