"""The batch layout, stated once: `FIELDS` (name, shape, dtype, pad value of every field).

Everything that needs the layout derives it from `FIELDS`: the pipeline's examples and padding
(`example`, `pad_rows`), the step's input shardings (`NDIMS`), the compile check's abstract
batch (`abstract`), the jitted step's input (`Batch`) and the model call (`ModelInputs`).

Dimensions: B = batch rows, T = seq_len, C = predictor inputs per row, P = predictor input
length. CPT (`packing.py`): C = num_chunks - 1, P = T / num_chunks, one segment per row. SFT
(`sft.py`, packed by `packing.pack_sft`): C = data.sft_pack (conversations per row; 1 = one
unpacked), P = max_prompt_len, mask_index = the token's conversation. Padding is marked by
`loss_weights`, `predictor_lengths` and `segment_ids` (0) only: never test ``ids == pad_id``
(SmolLM2's pad id is `<|im_end|>`, a real token). `predictor_ids` are in the predictor's
tokenizer (`data.predictor_tokenizer`; the LLM's by default, then P follows the rules above;
with its own tokenizer P = max_prompt_len in CPT too, `predictor_input.py`). Every field is
sharded over the batch axes on its first dim (`train/sharding.py batch_sharding`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import flax.struct
import jax
import numpy as np

Array = Any  # jax.Array or np.ndarray
PAD_ID = "pad_id"  # pad value placeholder: the tokenizer's pad id
# The predictor's tokenizer's pad id (the LLM's unless the predictor has its own tokenizer).
PREDICTOR_PAD_ID = "predictor_pad_id"


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  dims: tuple[str, ...]  # symbolic shape, batch dim "B" first
  dtype: type
  pad: int | float | str  # value of padding rows (PAD_ID / PREDICTOR_PAD_ID: a tokenizer's)
  doc: str


FIELDS: tuple[Field, ...] = (
  Field("input_ids", ("B", "T"), np.int32, PAD_ID, "LLM input tokens (pad_id past the end)"),
  Field(
    "targets", ("B", "T"), np.int32, PAD_ID, "next tokens: targets[:, t] = token after input t"
  ),
  Field("loss_weights", ("B", "T"), np.float32, 0, "1 where the loss counts, else 0"),
  Field(
    "predictor_ids",
    ("B", "C", "P"),
    np.int32,
    PREDICTOR_PAD_ID,
    "predictor inputs in the predictor's tokenizer, right-padded (its pad_id)",
  ),
  Field("predictor_lengths", ("B", "C"), np.int32, 1, "valid tokens per predictor input (>= 1)"),
  Field("mask_index", ("B", "T"), np.int32, 0, "in [0, C): whose mask the LLM uses at input t"),
  Field(
    "segment_ids",
    ("B", "T"),
    np.int32,
    0,
    "example of each token in a packed row (1, 2, ...; 0 = padding): attention stays inside "
    "it and positions restart at its first token",
  ),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
NDIMS: dict[str, int] = {f.name: len(f.dims) for f in FIELDS}
_BY_NAME = {f.name: f for f in FIELDS}


def table() -> str:
  """The layout as a text table (for docs and error messages)."""
  return "\n".join(
    f"  {f.name:18s} [{', '.join(f.dims)}]{' ' * (9 - 2 * len(f.dims))} "
    f"{np.dtype(f.dtype).name:8s} pad {f.pad!s:7s} {f.doc}"
    for f in FIELDS
  )


def _missing(keys, what: str) -> None:
  missing = [n for n in FIELD_NAMES if n not in keys]
  if missing:
    raise ValueError(f"{what} is missing batch field(s) {missing}; the layout is\n{table()}")


def _pad_value(f: Field, pad_id: int, predictor_pad_id: int) -> int | float:
  return {PAD_ID: pad_id, PREDICTOR_PAD_ID: predictor_pad_id}.get(f.pad, f.pad)


def example(**fields: np.ndarray) -> dict[str, np.ndarray]:
  """One example (a batch row: every field without its B dim) as a dict in `FIELDS` order.

  Raises ValueError naming a missing, unknown or mis-ranked field. Extra per-example counters
  (keys starting with "_") pass through after the fields.
  """
  _missing(fields, "example")
  unknown = [k for k in fields if k not in _BY_NAME and not k.startswith("_")]
  if unknown:
    raise ValueError(f"example has unknown field(s) {unknown}; the layout is\n{table()}")
  for f in FIELDS:
    v = fields[f.name]
    if v.ndim != len(f.dims) - 1 or v.dtype != f.dtype:
      raise ValueError(
        f"example field {f.name}: {v.dtype}{list(v.shape)}, expected "
        f"{np.dtype(f.dtype).name} of rank {len(f.dims) - 1} [{', '.join(f.dims[1:])}]"
      )
  out = {n: fields[n] for n in FIELD_NAMES}
  out.update({k: v for k, v in fields.items() if k.startswith("_")})
  return out


def pad_rows(
  batch: Mapping[str, np.ndarray],
  batch_size: int,
  pad_id: int,
  predictor_pad_id: int | None = None,
) -> dict:
  """A short host batch (fewer than `batch_size` rows) -> `batch_size` rows; the filler rows
  hold each field's pad value (zero loss, predictor length 1; `predictor_pad_id` defaults to
  `pad_id`, the shared tokenizer's)."""
  _missing(batch, "batch")
  unknown = [k for k in batch if k not in _BY_NAME]
  if unknown:
    raise ValueError(f"batch has unknown field(s) {unknown}; the layout is\n{table()}")
  n = batch_size - batch["input_ids"].shape[0]
  pred_pad = pad_id if predictor_pad_id is None else predictor_pad_id
  return {
    k: np.concatenate(
      [v, np.full((n, *v.shape[1:]), _pad_value(_BY_NAME[k], pad_id, pred_pad), v.dtype)]
    )
    for k, v in batch.items()
  }


def abstract(
  sizes: Mapping[str, int], sharding: Callable[[int], Any] | None = None
) -> dict[str, jax.ShapeDtypeStruct]:
  """The batch as ShapeDtypeStructs for the symbolic sizes {"B", "T", "C", "P"}; `sharding`
  maps a field's rank to its sharding (e.g. `functools.partial(batch_sharding, mesh)`)."""
  absent = sorted({d for f in FIELDS for d in f.dims} - set(sizes))
  if absent:
    raise ValueError(f"abstract batch: sizes {dict(sizes)} lack dims {absent}")
  return {
    f.name: jax.ShapeDtypeStruct(
      tuple(int(sizes[d]) for d in f.dims),
      f.dtype,
      sharding=None if sharding is None else sharding(len(f.dims)),
    )
    for f in FIELDS
  }


@flax.struct.dataclass
class ModelInputs:
  """What the model reads of a batch (inference has no targets). See `FIELDS` for shapes;
  `predictor_ids` may also be [B, P] (one prompt per row, lengths [B])."""

  input_ids: Array  # [B, T] int32
  predictor_ids: Optional[Array] = None  # [B, C, P] int32 (None: mask kinds without predictor)
  predictor_lengths: Optional[Array] = None  # [B, C] int32
  mask_index: Optional[Array] = None  # [B, T] int32 in [0, C) (None: chunk 0 everywhere)
  segment_ids: Optional[Array] = None  # [B, T] int32 (None: one segment per row)


@flax.struct.dataclass
class Batch:
  """One training / eval batch (fields and shapes: `FIELDS`). A pytree: jit takes it whole."""

  input_ids: Array
  targets: Array
  loss_weights: Array
  predictor_ids: Array
  predictor_lengths: Array
  mask_index: Array
  segment_ids: Array

  @classmethod
  def from_dict(cls, d: Mapping[str, Array]) -> "Batch":
    """The pipeline's dict -> Batch; ValueError naming any missing field."""
    _missing(d, "batch")
    return cls(**{n: d[n] for n in FIELD_NAMES})

  def to_dict(self) -> dict[str, Array]:
    return {n: getattr(self, n) for n in FIELD_NAMES}

  def model_inputs(self) -> ModelInputs:
    return ModelInputs(
      input_ids=self.input_ids,
      predictor_ids=self.predictor_ids,
      predictor_lengths=self.predictor_lengths,
      mask_index=self.mask_index,
      segment_ids=self.segment_ids,
    )


# The dataclasses and the table must not drift apart.
if tuple(f.name for f in dataclasses.fields(Batch)) != FIELD_NAMES or not {
  f.name for f in dataclasses.fields(ModelInputs)
} <= set(FIELD_NAMES):
  raise TypeError(f"Batch / ModelInputs fields differ from batch.FIELDS {FIELD_NAMES}")
