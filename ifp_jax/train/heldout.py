"""Held-out loss: one fixed sample of a stage's eval split and one loss reduction over it, used by
the trainer (end of stage, every `train.eval_every` steps, CPT text after SFT) and by
`evals/perplexity.py`.

The sample is the stage's own pipeline on split "eval", one pass, with the run's seed: CPT text
records are bounded pieces shuffled globally, so the first `rows` rows are spread over many
documents, and the same seed gives the same rows every time. Rows past `rows` in the last batch
keep their shape and get zero loss weight.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections
import numpy as np

from ifp_jax.data.pipeline import build_iterator
from ifp_jax.data.tokenization import Tokenizer

Batch = dict[str, np.ndarray]


def held_out_sample(
  data_cfg: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  *,
  kind: str,
  seq_len: int,
  batch_size: int,
  rows: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  split: str = "eval",
  predictor_tokenizer: Tokenizer | None = None,
) -> list[Batch]:
  """Up to `rows` rows (this host's share: batches of `batch_size`) of the `kind` eval split (or
  `split`); all of it if smaller (predictor inputs in `predictor_tokenizer`, default the
  shared one). Raises ValueError when a source has no such split."""
  it = build_iterator(
    data_cfg,
    tokenizer,
    kind=kind,
    seq_len=seq_len,
    batch_size=batch_size,
    process_index=process_index,
    process_count=process_count,
    seed=seed,
    split=split,
    num_epochs=1,
    predictor_tokenizer=predictor_tokenizer,
  )
  batches: list[Batch] = []
  taken = 0
  for batch in it:
    if taken + batch["input_ids"].shape[0] > rows:  # keep the shape, drop the extra rows' loss
      batch = dict(batch, loss_weights=batch["loss_weights"].copy())
      batch["loss_weights"][rows - taken :] = 0
    batches.append(batch)
    taken += batch["input_ids"].shape[0]
    if taken >= rows:
      break
  if not batches:
    raise ValueError(f"the {kind} {split} split is empty")
  return batches


def held_out_loss(
  batches: list[Batch], loss_fn: Callable[[Batch], Mapping[str, Any]]
) -> dict[str, float]:
  """Token-weighted mean loss over `batches`. `loss_fn(batch)` returns {"ce": mean CE over the
  batch's loss tokens, "tokens": their count} (the trainer's hard-mask eval step, or the eval's
  masked forward). Returns {"loss", "tokens", "rows"} (rows with any loss token)."""
  total, tokens, rows = 0.0, 0.0, 0
  for batch in batches:
    out = loss_fn(batch)
    total += float(out["ce"]) * float(out["tokens"])
    tokens += float(out["tokens"])
    rows += int((np.asarray(batch["loss_weights"]).sum(axis=1) > 0).sum())
  if tokens == 0:
    raise ValueError("the held-out batches hold no loss tokens")
  return {"loss": total / tokens, "tokens": tokens, "rows": rows}
