"""SFT formatting (numpy, host-local): chat messages -> one fixed-shape example.

LLM sequence: the conversation in the tokenizer's chat format (ChatML), encoded piece by piece
(`Tokenizer.chat_segments`), i.e. prompt turns, then each assistant turn = content +
`<|im_end|>`. Loss is on the assistant output tokens only (content and closing `<|im_end|>`).
Row of n tokens: ``input_ids = seq[:-1]``, ``targets = seq[1:]``, ``loss_weights[t] = 1`` iff
``targets[t]`` is assistant output; right-padded to T with `pad_id` (zero loss).

Too long (n > T+1) -> truncated and counted (`_truncated`):
  * ``"left_prompt"``: drop tokens from the start of the sequence, never past the token before
    the first assistant output token; if still too long, cut the end;
  * ``"right"``: cut the end.
Predictor input (C = 1): the first user message's content, encoded without any chat markup
(with the predictor's own tokenizer if it has one, `predictor_input.py`),
cut to its first `max_prompt_len` tokens (counted in `_prompt_truncated`), right-padded;
an empty prompt becomes the single token EOS (lengths are always >= 1). ``mask_index`` is 0,
``segment_ids`` 1 on the n real tokens (0 on padding), ``_real_tokens`` = n. Rows of several
conversations are packed from these by `packing.pack_sft`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ifp_jax.data.batch import example
from ifp_jax.data.predictor_input import encode_prompt
from ifp_jax.data.tokenization import Tokenizer

TRUNCATION_POLICIES = ("left_prompt", "right")


def first_user_content(messages: Sequence[Mapping[str, str]]) -> str:
  for m in messages:
    if m["role"] == "user":
      return m["content"]
  raise ValueError("conversation has no user message")


def encode_conversation(
  tok: Tokenizer, messages: Sequence[Mapping[str, str]]
) -> tuple[list[int], list[bool]]:
  """Token ids of the chat-formatted conversation and, per token, whether it is trained on."""
  ids: list[int] = []
  is_output: list[bool] = []
  for text, output in tok.chat_segments(messages):
    piece = tok.encode(text)
    ids += piece
    is_output += [output] * len(piece)
  return ids, is_output


def truncate(
  ids: list[int], is_output: list[bool], max_len: int, policy: str
) -> tuple[list[int], list[bool], bool]:
  """Fits a sequence into `max_len` tokens by `policy`; returns (ids, is_output, truncated)."""
  if policy not in TRUNCATION_POLICIES:
    raise ValueError(f"truncate={policy!r}: use one of {TRUNCATION_POLICIES}")
  if len(ids) <= max_len:
    return ids, is_output, False
  if policy == "left_prompt":
    first_out = is_output.index(True) if True in is_output else len(ids)
    drop = min(len(ids) - max_len, max(first_out - 1, 0))
    ids, is_output = ids[drop:], is_output[drop:]
  return ids[:max_len], is_output[:max_len], True


def format_sft(
  tok: Tokenizer,
  messages: Sequence[Mapping[str, str]],
  *,
  seq_len: int,
  max_prompt_len: int,
  policy: str = "left_prompt",
  predictor_tokenizer: Tokenizer | None = None,
) -> dict[str, np.ndarray]:
  """One SFT example (data/batch.py fields): input_ids/targets/loss_weights/mask_index [T],
  predictor_ids [1, P], predictor_lengths [1], and counters `_truncated`, `_prompt_truncated`,
  `_no_loss` (int32). The prompt is encoded with `predictor_tokenizer` (default: `tok`)."""
  ids, is_output = encode_conversation(tok, messages)
  ids, is_output, truncated = truncate(ids, is_output, seq_len + 1, policy)
  n = len(ids) - 1
  input_ids = np.full(seq_len, tok.pad_id, np.int32)
  targets = np.full(seq_len, tok.pad_id, np.int32)
  loss_weights = np.zeros(seq_len, np.float32)
  input_ids[:n], targets[:n] = ids[:-1], ids[1:]
  loss_weights[:n] = np.asarray(is_output[1:], np.float32)

  prompt, prompt_len, prompt_cut = encode_prompt(
    predictor_tokenizer or tok, first_user_content(messages), max_prompt_len
  )
  return example(
    input_ids=input_ids,
    targets=targets,
    loss_weights=loss_weights,
    predictor_ids=prompt[None],
    predictor_lengths=np.array([prompt_len], np.int32),
    mask_index=np.zeros(seq_len, np.int32),
    segment_ids=(np.arange(seq_len) < n).astype(np.int32),
    _real_tokens=np.int32(n),
    _truncated=np.int32(truncated),
    _prompt_truncated=np.int32(prompt_cut),
    _no_loss=np.int32(not loss_weights.any()),
  )
