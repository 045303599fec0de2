"""CPT packing with chunk -> mask routing (numpy, host-local).

Documents are tokenized and each followed by EOS, concatenated into one stream, and cut into
rows of T+1 tokens with stride T (the last token of a row is the first of the next, so every
token is a target exactly once). Row r: ``input_ids = row[:-1]``, ``targets = row[1:]``.

Chunk routing (docs/method.md §5, K = `num_chunks`, P = T / K, C = K - 1):
  * the targets are cut into K chunks of P tokens; chunk k covers target positions
    [k*P, (k+1)*P);
  * predictor input c (c = 0..K-2) is the tokens of target chunk c:
    ``predictor_ids[c] = targets[c*P:(c+1)*P]``, ``predictor_lengths[c] = P``;
  * the mask predicted from chunk j is used at every input position of chunk j+1:
    ``mask_index[t] = max(t // P - 1, 0)``;
  * chunk 0 has no loss (``loss_weights[:P] = 0``): it has no mask from an earlier chunk.
No leak: the loss at target position t (chunk j+1 >= 1) predicts ``row[t+1]``; its mask comes
from ``targets[j*P:(j+1)*P] = row[j*P+1 : (j+1)*P+1]``, all at row index <= (j+1)*P <= t, i.e.
tokens the LLM has already read causally at input position t.
"""

from __future__ import annotations

import copy
from typing import Any

import grain
import numpy as np

from ifp_jax.data.batch import example


def route_cpt_row(row: np.ndarray, num_chunks: int) -> dict[str, np.ndarray]:
  """A packed row [T+1] -> one CPT example (fields: data/batch.py; routing: module docstring)."""
  row = np.asarray(row, np.int32)
  seq_len = row.shape[0] - 1
  if num_chunks < 2 or seq_len % num_chunks:
    raise ValueError(f"num_chunks={num_chunks} must be >= 2 and divide seq_len={seq_len}")
  p = seq_len // num_chunks
  targets = row[1:]
  loss_weights = np.ones(seq_len, np.float32)
  loss_weights[:p] = 0.0
  return example(
    input_ids=row[:-1].copy(),
    targets=targets.copy(),
    loss_weights=loss_weights,
    predictor_ids=targets.reshape(num_chunks, p)[:-1].copy(),
    predictor_lengths=np.full(num_chunks - 1, p, np.int32),
    mask_index=np.maximum(np.arange(seq_len, dtype=np.int32) // p - 1, 0).astype(np.int32),
    segment_ids=np.ones(seq_len, np.int32),  # one stream: documents are separated by EOS only
  )


class _PackIterator(grain.DatasetIterator):
  """Parent yields 1-D token arrays (documents incl. EOS); yields rows of `row_len` tokens.
  With `with_doc`, the parent yields (tokens, doc id) pairs and rows come out as (row, doc id of
  the row's first token) pairs.

  State: the parent's state before the document holding the cursor (the next row's first
  token) and the cursor's offset in it, so a restore re-reads one document, not a buffer.
  """

  def __init__(
    self, parent: grain.DatasetIterator, row_len: int, stride: int, with_doc: bool = False
  ) -> None:
    super().__init__(parent)
    self._row_len, self._stride, self._with_doc = row_len, stride, with_doc
    self._docs: list[tuple[Any, np.ndarray, int]] = []  # (parent state before doc, tokens, id)
    self._offset = 0

  def _fetch(self) -> None:
    state = copy.deepcopy(self._parent.get_state())
    element = next(self._parent)  # StopIteration ends the stream
    tokens, doc = element if self._with_doc else (element, -1)
    tokens = np.asarray(tokens, np.int32)
    if tokens.size:
      self._docs.append((state, tokens, int(doc)))

  def __next__(self) -> Any:
    while sum(len(t) for _, t, _ in self._docs) - self._offset < self._row_len:
      self._fetch()
    doc = self._docs[0][2]
    row = np.concatenate([t for _, t, _ in self._docs])[self._offset : self._offset + self._row_len]
    self._offset += self._stride
    while self._offset >= len(self._docs[0][1]):
      self._offset -= len(self._docs.pop(0)[1])
    return (row, np.int64(doc)) if self._with_doc else row

  def get_state(self) -> dict[str, Any]:
    if not self._docs:
      return {"parent": copy.deepcopy(self._parent.get_state()), "offset": 0, "has_doc": False}
    return {"parent": copy.deepcopy(self._docs[0][0]), "offset": self._offset, "has_doc": True}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(copy.deepcopy(state["parent"]))
    self._docs, self._offset = [], int(state["offset"])
    if state["has_doc"]:
      self._fetch()


class PackIterDataset(grain.IterDataset):
  """Packs a stream of token arrays into rows of ``seq_len + 1`` tokens with stride seq_len
  (`with_doc`: a stream of (tokens, doc id) into (row, doc id))."""

  def __init__(self, parent: grain.IterDataset, seq_len: int, with_doc: bool = False) -> None:
    super().__init__(parent)
    self._seq_len, self._with_doc = seq_len, with_doc

  def __iter__(self) -> _PackIterator:
    return _PackIterator(self._parent.__iter__(), self._seq_len + 1, self._seq_len, self._with_doc)

  def __str__(self) -> str:
    return f"PackIterDataset(seq_len={self._seq_len})"


# --- SFT packing ----------------------------------------------------------------------------
_ROW_IDENTITY = ("_source", "_doc")


def pack_sft(
  examples: list[dict[str, Any]],
  max_segments: int,
  pad_id: int,
  predictor_pad_id: int | None = None,
) -> dict[str, Any]:
  """Formatted SFT examples (`sft.format_sft`, each right-padded to T with `_real_tokens` real
  ones, together at most T) -> one packed row: example i is segment i + 1 (`segment_ids`), its
  tokens read mask i (`mask_index`), its prompt is predictor input i of `max_segments` (unused
  inputs: one pad token, `predictor_pad_id`, default `pad_id`); the counters are summed."""
  if not 1 <= len(examples) <= max_segments:
    raise ValueError(f"pack_sft: {len(examples)} examples for {max_segments} segments")
  seq_len = examples[0]["input_ids"].shape[0]
  used = [int(e["_real_tokens"]) for e in examples]
  if sum(used) > seq_len:
    raise ValueError(f"pack_sft: {sum(used)} tokens do not fit a row of {seq_len}")
  p = examples[0]["predictor_ids"].shape[1]
  row = {
    "input_ids": np.full(seq_len, pad_id, np.int32),
    "targets": np.full(seq_len, pad_id, np.int32),
    "loss_weights": np.zeros(seq_len, np.float32),
    "predictor_ids": np.full(
      (max_segments, p), pad_id if predictor_pad_id is None else predictor_pad_id, np.int32
    ),
    "predictor_lengths": np.ones(max_segments, np.int32),
    "mask_index": np.zeros(seq_len, np.int32),
    "segment_ids": np.zeros(seq_len, np.int32),
  }
  at = 0
  for i, (e, n) in enumerate(zip(examples, used)):
    for key in ("input_ids", "targets", "loss_weights"):
      row[key][at : at + n] = e[key][:n]
    row["mask_index"][at : at + n] = i
    row["segment_ids"][at : at + n] = i + 1
    row["predictor_ids"][i] = e["predictor_ids"][0]
    row["predictor_lengths"][i] = e["predictor_lengths"][0]
    at += n
  # Private keys: the row's identity (`_source`, `_doc`: one source per row, packed before the
  # mixture) comes from its first example; the counters are summed.
  private = {
    k: examples[0][k] if k in _ROW_IDENTITY else np.int32(sum(int(e[k]) for e in examples))
    for k in examples[0]
    if k.startswith("_")
  }
  return {**example(**row), **private}


class _SFTPackIterator(grain.DatasetIterator):
  """Greedy packing in stream order: a row takes examples while they fit (tokens <= T, at most
  `max_segments`); the first that does not fit starts the next row.

  State: the parent's state before that waiting example (if any), so a restore re-reads one
  example, not a buffer: the same later rows after a restore.
  """

  def __init__(
    self,
    parent: grain.DatasetIterator,
    max_segments: int,
    pad_id: int,
    predictor_pad_id: int | None = None,
  ) -> None:
    super().__init__(parent)
    self._max, self._pad_id, self._predictor_pad_id = max_segments, pad_id, predictor_pad_id
    self._waiting: tuple[Any, dict[str, Any]] | None = None  # (parent state before it, example)

  def _fetch(self) -> tuple[Any, dict[str, Any]]:
    state = copy.deepcopy(self._parent.get_state())
    return state, next(self._parent)  # StopIteration ends the stream

  def __next__(self) -> dict[str, Any]:
    first = self._waiting or self._fetch()
    self._waiting = None
    row = [first[1]]
    seq_len, used = first[1]["input_ids"].shape[0], int(first[1]["_real_tokens"])
    while len(row) < self._max:
      try:
        nxt = self._fetch()
      except StopIteration:
        break
      n = int(nxt[1]["_real_tokens"])
      if used + n > seq_len:
        self._waiting = nxt
        break
      row.append(nxt[1])
      used += n
    return pack_sft(row, self._max, self._pad_id, self._predictor_pad_id)

  def get_state(self) -> dict[str, Any]:
    if self._waiting is None:
      return {"parent": copy.deepcopy(self._parent.get_state()), "waiting": False}
    return {"parent": copy.deepcopy(self._waiting[0]), "waiting": True}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(copy.deepcopy(state["parent"]))
    self._waiting = self._fetch() if state["waiting"] else None


class SFTPackIterDataset(grain.IterDataset):
  """Packs formatted SFT examples into rows of up to `max_segments` conversations (1: one
  example per row, as formatted)."""

  def __init__(
    self,
    parent: grain.IterDataset,
    max_segments: int,
    pad_id: int,
    predictor_pad_id: int | None = None,
  ) -> None:
    super().__init__(parent)
    if max_segments < 1:
      raise ValueError(f"data.sft_pack={max_segments} must be >= 1 (1 = one example per row)")
    self._max, self._pad_id, self._predictor_pad_id = max_segments, pad_id, predictor_pad_id

  def __iter__(self) -> _SFTPackIterator:
    return _SFTPackIterator(
      self._parent.__iter__(), self._max, self._pad_id, self._predictor_pad_id
    )

  def __str__(self) -> str:
    return f"SFTPackIterDataset(max_segments={self._max})"
