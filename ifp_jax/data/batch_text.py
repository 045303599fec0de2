"""A batch as text: what the predictor reads and what the LLM is trained on, row by row.

The trainer writes the first batch of every stage it starts to `WORKDIR/batches/<stage>_step<N>
.txt`, so that a run's data can be checked by reading it, not inferred from a loss curve. For
each row and each of its predictor inputs c: the predictor's text (its own tokenizer), then the
LLM tokens served by mask c, with the tokens whose next-token loss counts between ⟦ and ⟧.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ifp_jax.data.tokenization import Tokenizer

LOSS_OPEN, LOSS_CLOSE = "⟦", "⟧"


def _spans(ids: np.ndarray, weights: np.ndarray, tokenizer: Tokenizer) -> str:
  """The tokens as text, each maximal run of loss-carrying tokens between LOSS_OPEN/CLOSE (the
  run of inputs whose *targets* count: the text the model learns to continue)."""
  out, start = [], 0
  flags = weights > 0
  for i in range(1, len(ids) + 1):
    if i == len(ids) or flags[i] != flags[start]:
      text = tokenizer.decode([int(x) for x in ids[start:i]])
      out.append(f"{LOSS_OPEN}{text}{LOSS_CLOSE}" if flags[start] else text)
      start = i
  return "".join(out)


def render_rows(
  batch: Mapping[str, np.ndarray],
  tokenizer: Tokenizer,
  predictor_tokenizer: Tokenizer | None = None,
  rows: int = 2,
) -> str:
  """The first `rows` rows of a batch (the layout of `data/batch.py`) as text; padding (segment
  id 0) is left out and counted."""
  predictor_tokenizer = predictor_tokenizer or tokenizer
  ids, weights = np.asarray(batch["input_ids"]), np.asarray(batch["loss_weights"])
  index, segments = np.asarray(batch["mask_index"]), np.asarray(batch["segment_ids"])
  p_ids, p_len = np.asarray(batch["predictor_ids"]), np.asarray(batch["predictor_lengths"])
  lines = []
  for r in range(min(rows, ids.shape[0])):
    real = segments[r] > 0
    lines.append(
      f"=== row {r}: {int(real.sum())} real tokens of {ids.shape[1]}, "
      f"{int((weights[r] > 0).sum())} with loss, {p_ids.shape[1]} predictor input(s)"
    )
    for c in range(p_ids.shape[1]):
      served = real & (index[r] == c)
      if not served.any():
        continue
      prompt = predictor_tokenizer.decode([int(x) for x in p_ids[r, c, : p_len[r, c]]])
      lines.append(f"--- predictor input {c} ({int(p_len[r, c])} tokens): {prompt!r}")
      lines.append(
        f"--- LLM tokens under mask {c} ({int(served.sum())}; {LOSS_OPEN}loss{LOSS_CLOSE}):"
      )
      lines.append(_spans(ids[r][served], weights[r][served], tokenizer))
  return "\n".join(lines) + "\n"
