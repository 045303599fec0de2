"""The predictor's input when it has its own tokenizer (`data.predictor_tokenizer`).

One rule for every text the predictor reads (SFT prompts, CPT chunks, inference instructions):
the text encoded with the predictor's tokenizer, no chat markup, cut to its first `max_len`
tokens, right-padded with the predictor's pad id; an empty text reads the single token EOS.

CPT chunk routing cuts LLM tokens into chunks; the predictor reads the *text* of chunk j: its
LLM tokens decoded (the chunk -> text mapping), then encoded with the predictor's tokenizer
(docs/method.md §11). Decoding is exact for byte-level tokenizers, except that a multi-byte
character cut by a chunk boundary becomes U+FFFD; the text never reaches past chunk j, so the
no-leak property of `packing.py` holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ifp_jax.data.tokenization import Tokenizer


def encode_prompt(tok: Tokenizer, text: str, max_len: int) -> tuple[np.ndarray, int, bool]:
  """(ids [max_len] int32 right-padded with tok.pad_id, valid length >= 1, truncated?)."""
  ids = tok.encode(text) or [tok.eos_id]
  kept = ids[:max_len]
  row = np.full(max_len, tok.pad_id, np.int32)
  row[: len(kept)] = kept
  return row, len(kept), len(ids) > max_len


def retokenize_chunks(
  example: dict[str, Any], llm_tok: Tokenizer, predictor_tok: Tokenizer, max_len: int
) -> dict[str, Any]:
  """A routed CPT example whose predictor inputs are LLM-token chunks [C, P] -> the same chunks
  as predictor tokens [C, max_len] (module docstring); `_prompt_truncated` counts cut chunks."""
  chunks, lengths = example["predictor_ids"], example["predictor_lengths"]
  ids = np.empty((chunks.shape[0], max_len), np.int32)
  new_lengths = np.empty(chunks.shape[0], np.int32)
  cut = 0
  for c in range(chunks.shape[0]):
    text = llm_tok.decode(chunks[c, : int(lengths[c])].tolist())
    ids[c], new_lengths[c], truncated = encode_prompt(predictor_tok, text, max_len)
    cut += truncated
  out = {**example, "predictor_ids": ids, "predictor_lengths": new_lengths}
  if "_prompt_truncated" in example:
    out["_prompt_truncated"] = np.int32(int(example["_prompt_truncated"]) + cut)
  return out
