"""The batch table (ifp_jax/data/batch.py FIELDS) drives examples, padding, abstract shapes, the
step's shardings and the Batch pytree; a missing field fails with its name."""

import dataclasses

import jax
import numpy as np
import pytest

from ifp_jax.data import batch as layout
from ifp_jax.data import packing, sft
from ifp_jax.data.tokenization import ByteTokenizer
from ifp_jax.train import compile_check, sharding
from ifp_jax.train.config import default_config
from ifp_jax.train.state import BATCH_NDIMS

SIZES = {"B": 3, "T": 8, "C": 2, "P": 5}
PAD = 7


def _host_batch(rows: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    f.name: rng.integers(10, 20, [rows] + [SIZES[d] for d in f.dims[1:]]).astype(f.dtype)
    for f in layout.FIELDS
  }


def test_table_drives_abstract_shapes_and_ndims():
  abstract = layout.abstract(SIZES)
  assert tuple(abstract) == layout.FIELD_NAMES
  for f in layout.FIELDS:
    assert abstract[f.name].shape == tuple(SIZES[d] for d in f.dims)
    assert abstract[f.name].dtype == np.dtype(f.dtype)
    assert BATCH_NDIMS[f.name] == len(f.dims)
  assert abstract["predictor_ids"].shape == (3, 2, 5)  # [B, C, P]
  assert abstract["loss_weights"].dtype == np.float32
  with pytest.raises(ValueError, match=r"lack dims \['P'\]"):
    layout.abstract({"B": 3, "T": 8, "C": 2})


def test_compile_check_abstract_batch_comes_from_the_table():
  config = default_config()
  config.train.batch_size, config.train.seq_len, config.data.num_chunks = 8, 16, 4
  mesh = sharding.make_mesh((-1, 1, 1))
  got = compile_check.abstract_batch(config, "cpt", mesh)
  want = layout.abstract({"B": 8, "T": 16, "C": 3, "P": 4})
  assert tuple(got) == layout.FIELD_NAMES
  for name in layout.FIELD_NAMES:
    assert (got[name].shape, got[name].dtype) == (want[name].shape, want[name].dtype)
    assert got[name].sharding == sharding.batch_sharding(mesh, len(want[name].shape))


def test_pad_rows_fills_each_field_with_its_table_value():
  short = _host_batch(2)
  padded = layout.pad_rows(short, 5, PAD)
  for f in layout.FIELDS:
    v = padded[f.name]
    assert v.shape == (5, *short[f.name].shape[1:]) and v.dtype == f.dtype
    np.testing.assert_array_equal(v[:2], short[f.name])
    pads = (layout.PAD_ID, layout.PREDICTOR_PAD_ID)  # one shared tokenizer here
    np.testing.assert_array_equal(v[2:], PAD if f.pad in pads else f.pad)
  # What the pipeline relies on: filler rows carry no loss and a valid predictor length.
  assert not padded["loss_weights"][2:].any() and (padded["predictor_lengths"][2:] == 1).all()


@pytest.mark.parametrize("name", layout.FIELD_NAMES)
def test_a_missing_field_is_named(name):
  short = _host_batch(2)
  del short[name]
  with pytest.raises(ValueError, match=f"missing batch field.*'{name}'"):
    layout.pad_rows(short, 4, PAD)
  with pytest.raises(ValueError, match=f"missing batch field.*'{name}'"):
    layout.Batch.from_dict(short)
  row = {k: v[0] for k, v in short.items()}
  with pytest.raises(ValueError, match=f"missing batch field.*'{name}'"):
    layout.example(**row)


def test_example_checks_rank_and_dtype_and_unknown_fields():
  row = {k: v[0] for k, v in _host_batch(1).items()}
  assert tuple(layout.example(**row, _counter=np.int32(1))) == layout.FIELD_NAMES + ("_counter",)
  with pytest.raises(ValueError, match="loss_weights: int32"):
    layout.example(**{**row, "loss_weights": row["loss_weights"].astype(np.int32)})
  with pytest.raises(ValueError, match=r"predictor_ids.*rank 2 \[C, P\]"):
    layout.example(**{**row, "predictor_ids": row["predictor_ids"][0]})
  with pytest.raises(ValueError, match="unknown field"):
    layout.example(**row, extra=row["input_ids"])


def test_cpt_and_sft_examples_follow_the_table():
  cpt = packing.route_cpt_row(np.arange(9), 4)
  tok = ByteTokenizer()
  msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
  sft_ex = sft.format_sft(tok, msgs, seq_len=32, max_prompt_len=6)
  for ex, c, p in ((cpt, 3, 2), (sft_ex, 1, 6)):
    sizes = {"T": 8 if ex is cpt else 32, "C": c, "P": p}
    for f in layout.FIELDS:
      assert ex[f.name].shape == tuple(sizes[d] for d in f.dims[1:]), f.name
      assert ex[f.name].dtype == f.dtype, f.name


def test_batch_pytree_round_trip_and_model_inputs():
  d = _host_batch(3)
  b = layout.Batch.from_dict(d)
  assert [f.name for f in dataclasses.fields(b)] == list(layout.FIELD_NAMES)
  assert len(jax.tree.leaves(b)) == len(layout.FIELDS)
  assert all(b.to_dict()[k] is d[k] for k in layout.FIELD_NAMES)
  m = b.model_inputs()
  assert m.input_ids is d["input_ids"] and m.mask_index is d["mask_index"]
  assert not hasattr(m, "targets")  # the model never sees the loss fields
