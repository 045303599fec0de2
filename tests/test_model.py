"""Masked decoder == gathered decoder, predictor, IFPModel mask kinds, KV cache, bad inputs."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.data.batch import ModelInputs
from ifp_jax.model import gather, masking
from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig
from ifp_jax.model.decoder import Decoder, KVCache
from ifp_jax.model.ifp_model import IFPConfig, IFPModel, init_params, mask_kind
from ifp_jax.model.predictor import SparsityPredictor, backbone_from_llm

LLM = LlamaConfig(
  vocab_size=64,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  initializer_range=0.2,
)
PRED = LLM.replace(num_hidden_layers=1)


def dec_params(cfg=LLM, seed=0):
  return nn.unbox(Decoder(cfg).init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"])


def ids(b=2, t=12, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, LLM.vocab_size)


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_masked_equals_gathered():
  params, x, k = dec_params(), ids(1), 16
  scores = jax.random.normal(jax.random.key(1), (LLM.num_hidden_layers, LLM.intermediate_size))
  mask = masking.hard_topk(scores, k)
  masked = Decoder(LLM).apply({"params": params}, x, ffn_masks=mask[None]).logits
  idx = gather.kept_indices(mask, k)
  small = gather.gather_ffn(params, idx)
  assert small["layers"]["mlp"]["gate_proj"]["kernel"].shape == (3, 32, k)
  dense_k = Decoder(gather.gathered_config(LLM, k)).apply({"params": small}, x).logits
  np.testing.assert_allclose(masked, dense_k, atol=1e-5, rtol=1e-5)
  # The mask matters: a different k-subset gives different logits.
  other = Decoder(LLM).apply({"params": params}, x, ffn_masks=(1 - mask)[None]).logits
  assert np.abs(np.asarray(other - masked)).max() > 1e-3


def test_soft_values_fold_into_down_proj():
  params, x, k = dec_params(), ids(1), 16
  scores = jax.random.normal(jax.random.key(2), (LLM.num_hidden_layers, LLM.intermediate_size))
  soft = masking.soft_topk_mask(scores, k, 0.5)
  masked = Decoder(LLM).apply({"params": params}, x, ffn_masks=soft[None]).logits
  idx = gather.kept_indices(soft, k)
  small = gather.gather_ffn(params, idx, scale=jnp.take_along_axis(soft, idx, axis=-1))
  dense_k = Decoder(gather.gathered_config(LLM, k)).apply({"params": small}, x).logits
  np.testing.assert_allclose(masked, dense_k, atol=1e-5, rtol=1e-5)


def test_all_ones_mask_equals_dense():
  params, x = dec_params(), ids()
  dense = Decoder(LLM).apply({"params": params}, x).logits
  ones = jnp.ones((2, LLM.num_hidden_layers, LLM.intermediate_size))
  np.testing.assert_allclose(
    Decoder(LLM).apply({"params": params}, x, ffn_masks=ones).logits, dense, atol=1e-6
  )


def test_per_token_mask_routing():
  """mask_index picks chunk c's mask per token: equal to running each mask separately."""
  params, x = dec_params(), ids(1, 10)
  m = (jax.random.uniform(jax.random.key(3), (1, 2, 3, 48)) > 0.5).astype(jnp.float32)
  route = jnp.array([[0] * 10])
  out0 = Decoder(LLM).apply({"params": params}, x, ffn_masks=m, mask_index=route).logits
  ref0 = Decoder(LLM).apply({"params": params}, x, ffn_masks=m[:, 0]).logits
  np.testing.assert_allclose(out0, ref0, atol=1e-6)
  route = jnp.array([[0] * 5 + [1] * 5])
  mixed = Decoder(LLM).apply({"params": params}, x, ffn_masks=m, mask_index=route).logits
  np.testing.assert_allclose(mixed[:, :5], ref0[:, :5], atol=1e-6)  # causal: prefix unchanged
  assert np.abs(np.asarray(mixed[:, 5:] - ref0[:, 5:])).max() > 1e-4


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_kv_cache_decode_equals_full_forward_with_left_padding():
  params = dec_params()
  x = ids(2, 9)
  attn = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])  # row 0 left-padded by 2
  pos = jnp.clip(jnp.cumsum(attn, axis=1) - 1, 0)
  full = Decoder(LLM).apply({"params": params}, x, attention_mask=attn, positions=pos).logits
  cache = KVCache.init(LLM, 2, 16)
  out = Decoder(LLM).apply(
    {"params": params}, x[:, :6], attention_mask=attn[:, :6], positions=pos[:, :6], cache=cache
  )
  steps = [out.logits]
  cache = out.cache
  for t in range(6, 9):
    out = Decoder(LLM).apply(
      {"params": params},
      x[:, t : t + 1],
      attention_mask=attn[:, t : t + 1],
      positions=pos[:, t : t + 1],
      cache=cache,
    )
    steps.append(out.logits)
    cache = out.cache
  assert int(cache.index) == 9
  np.testing.assert_allclose(jnp.concatenate(steps, 1)[:, 2:], full[:, 2:], atol=1e-5)
  # Row 0 without its padding gives the same logits as the padded row.
  unpadded = Decoder(LLM).apply({"params": params}, x[:1, 2:]).logits
  np.testing.assert_allclose(full[0, 2:], unpadded[0], atol=1e-5)


def test_bad_mask_shape_is_named():
  params, x = dec_params(), ids()
  with pytest.raises(ValueError, match=r"FFN masks must have shape .*got \(2, 3, 47\)"):
    Decoder(LLM).apply({"params": params}, x, ffn_masks=jnp.ones((2, 3, 47)))
  with pytest.raises(ValueError, match="need mask_index"):
    Decoder(LLM).apply({"params": params}, x, ffn_masks=jnp.ones((2, 2, 3, 48)))


def test_config_errors_are_named():
  with pytest.raises(ValueError, match=r"k=49 must be in \[1, d_ff=48\]"):
    IFPConfig(llm=LLM, predictor=PRED, k=49)
  with pytest.raises(ValueError, match="mask_kind='topk'"):
    IFPConfig(llm=LLM, predictor=PRED, mask_kind="topk")
  with pytest.raises(ValueError, match="needs a predictor"):
    IFPConfig(llm=LLM, mask_kind="soft_topk", k=16)
  # A predictor with its own tokenizer has its own vocab: not an error.
  IFPConfig(llm=LLM, predictor=PRED.replace(vocab_size=65), k=16)
  with pytest.raises(ValueError, match="num_key_value_heads"):
    LLM.replace(num_key_value_heads=3)


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_predictor_reads_last_non_pad_token():
  pred = SparsityPredictor(PRED, PredictorHeadConfig(hidden=16, out_init_std=1.0), 3, 48)
  p = jnp.array([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
  params = pred.init(jax.random.key(0), p, jnp.array([3, 5]))
  s = pred.apply(params, p, jnp.array([3, 5]))
  assert s.shape == (2, 3, 48) and s.dtype == jnp.float32
  s_short = pred.apply(params, p[:1, :3], jnp.array([3]))
  np.testing.assert_allclose(s[0], s_short[0], atol=1e-5)  # padding after the prompt is ignored
  assert np.abs(np.asarray(s[0] - s[1])).max() > 1e-4


def test_centred_head_is_the_plain_head_with_the_centre_folded_into_the_bias():
  """(act(h_in) - c) W + b == act(h_in) W + (b - c W): centring changes training, not the
  function class (what the torch export relies on)."""
  head = PredictorHeadConfig(hidden=16, out_init_std=1.0)
  plain = SparsityPredictor(PRED, head, 3, 48)
  centred = SparsityPredictor(PRED, dataclasses.replace(head, center=True), 3, 48)
  p, lengths = jnp.array([[5, 6, 7, 0], [5, 6, 7, 8]]), jnp.array([3, 4])
  params = nn.unbox(centred.init(jax.random.key(0), p, lengths)["params"])
  assert set(params) == {"backbone", "head_in", "head_out", "head_center"}
  np.testing.assert_array_equal(params["head_center"], 0)  # a no-op until a warm start sets it
  params["head_center"] = jax.random.normal(jax.random.key(1), (16,))
  folded = {k: v for k, v in params.items() if k != "head_center"}
  folded["head_out"] = dict(
    params["head_out"],
    bias=params["head_out"]["bias"] - params["head_center"] @ params["head_out"]["kernel"],
  )
  got = jax.jit(centred.apply)({"params": params}, p, lengths)
  want = jax.jit(plain.apply)({"params": folded}, p, lengths)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  unfolded = jax.jit(plain.apply)(
    {"params": {**folded, "head_out": params["head_out"]}}, p, lengths
  )
  assert np.abs(np.asarray(got - unfolded)).max() > 0.1  # the centre matters


def test_backbone_from_llm_equals_first_layers():
  big = dec_params(LLM)
  bb = backbone_from_llm(big, 1)
  x = ids()
  h_small = Decoder(PRED).apply({"params": bb}, x, compute_logits=False).hidden
  assert bb["layers"]["mlp"]["gate_proj"]["kernel"].shape[0] == 1
  assert h_small.shape == (2, 12, 32)
  with pytest.raises(ValueError, match="num_layers=4"):
    backbone_from_llm(big, 4)


@pytest.mark.parametrize(
  "kind", ["soft_topk", "hard_concrete", "static", "static_soft_topk", "none"]
)
@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_ifp_model_mask_kinds(kind):
  cfg = IFPConfig(
    llm=LLM,
    predictor=PRED if mask_kind(kind).uses_predictor else None,
    head=PredictorHeadConfig(hidden=16, out_init_std=1.0),
    mask_kind=kind,
    k=16,
    eps=0.5,
  )
  params = nn.unbox(init_params(cfg, jax.random.key(0)))
  assert ("predictor" in params) == cfg.uses_predictor
  x = ids(2, 10)
  pids, plen = x[:, None, :6], jnp.full((2, 1), 6)
  model = IFPModel(cfg)
  inputs = ModelInputs(input_ids=x, predictor_ids=pids, predictor_lengths=plen)
  train = model.apply(
    {"params": params}, inputs, deterministic=False, rngs={"mask": jax.random.key(1)}
  )
  evals = model.apply({"params": params}, inputs, deterministic=True)
  assert train.logits.shape == evals.logits.shape == (2, 10, 64)
  if kind == "none":
    assert evals.masks.masks is None
    return
  assert evals.masks.masks.shape[-2:] == (3, 48)
  kept = np.asarray((evals.masks.masks != 0).sum(-1))
  assert (kept == 16).all()  # eval masks keep exactly k per layer
  if not mask_kind(kind).hard_concrete:  # SoftTopK: exactly k nonzero, values in (0, 1]
    m = np.asarray(train.masks.masks)
    assert ((m != 0).sum(-1) == 16).all() and m.max() <= 1 and m[m != 0].min() > 0
  else:
    assert 0 <= float(train.masks.expected_sparsity) <= 1
  # The eval path through gathered weights equals the masked model, per example.
  idx = gather.kept_indices(evals.masks.masks[0, 0], 16)
  small = gather.gather_ffn(params["llm"], idx)
  dense_k = Decoder(gather.gathered_config(LLM, 16)).apply({"params": small}, x[:1]).logits
  np.testing.assert_allclose(evals.logits[:1], dense_k, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_soft_topk_model_gradients_reach_predictor_and_llm():
  cfg = IFPConfig(
    llm=LLM, predictor=PRED, head=PredictorHeadConfig(hidden=16, out_init_std=1.0), k=16, eps=0.5
  )
  params = nn.unbox(init_params(cfg, jax.random.key(0)))
  x = ids(2, 10)

  def loss(p):
    inputs = ModelInputs(
      input_ids=x, predictor_ids=x[:, None, :5], predictor_lengths=jnp.full((2, 1), 5)
    )
    out = IFPModel(cfg).apply({"params": p}, inputs, deterministic=False)
    return jnp.mean(out.logits**2)

  g = jax.grad(loss)(params)
  assert float(jnp.abs(g["predictor"]["head_out"]["kernel"]).max()) > 0
  assert float(jnp.abs(g["predictor"]["backbone"]["layers"]["mlp"]["up_proj"]["kernel"]).max()) > 0
  assert float(jnp.abs(g["llm"]["layers"]["mlp"]["down_proj"]["kernel"]).max()) > 0


@pytest.mark.parametrize(
  "kind", ["soft_topk", pytest.param("hard_concrete", marks=pytest.mark.slow)]
)
def test_packed_row_equals_its_examples_run_one_by_one(kind):
  """Packed SFT (data/packing.pack_sft): one row of three conversations gives each its own
  per-token losses (positions restart, attention stays inside the segment, its own predictor
  input picks its masks) and the gradient of their sum, as the three rows run unpacked."""
  from ifp_jax.data import packing
  from ifp_jax.data.batch import Batch
  from ifp_jax.train.losses import weighted_cross_entropy

  cfg = IFPConfig(
    llm=LLM,
    predictor=PRED,
    head=PredictorHeadConfig(hidden=16, out_init_std=1.0),
    mask_kind=kind,
    k=16,
    eps=0.5,
  )
  params = nn.unbox(init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(0)
  T, P, pad = 24, 6, 0
  examples = []
  for n, plen in ((7, 4), (9, 6), (5, 2)):
    row = {
      "input_ids": np.full(T, pad, np.int32),
      "targets": np.full(T, pad, np.int32),
      "loss_weights": np.zeros(T, np.float32),
      "predictor_ids": np.full((1, P), pad, np.int32),
      "predictor_lengths": np.array([plen], np.int32),
      "mask_index": np.zeros(T, np.int32),
      "segment_ids": (np.arange(T) < n).astype(np.int32),
    }
    row["input_ids"][:n] = rng.integers(1, 64, n)
    row["targets"][:n] = rng.integers(1, 64, n)
    row["loss_weights"][:n] = rng.random(n) < 0.7
    row["predictor_ids"][0, :plen] = rng.integers(1, 64, plen)
    examples.append({**row, "_real_tokens": np.int32(n)})
  packed = packing.pack_sft(examples, 4, pad)
  single = [packing.pack_sft([e], 1, pad) for e in examples]

  def as_batch(rows):
    return Batch.from_dict({k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]
                            if not k.startswith("_")})  # fmt: skip

  def token_nll(p, batch):
    # soft_topk: training's masks (deterministic). HardConcrete draws noise per mask slot, so
    # the layouts would draw differently: its deterministic (eval) gates are compared.
    out = IFPModel(cfg).apply(
      {"params": p}, batch.model_inputs(), deterministic=kind == "hard_concrete"
    )
    logp = jax.nn.log_softmax(out.logits, -1)
    nll = -jnp.take_along_axis(logp, batch.targets[..., None], -1)[..., 0]
    return nll * batch.loss_weights

  def total(p, batch):
    return jnp.sum(token_nll(p, batch))

  # Jitted: op by op, the model's hundreds of small ops took ~45 s of dispatch per case.
  token_nll, grad_total = jax.jit(token_nll), jax.jit(jax.grad(total))
  got = np.asarray(token_nll(params, as_batch([packed])))[0]
  at = 0
  for e, s in zip(examples, single):
    n = int(e["_real_tokens"])
    want = np.asarray(token_nll(params, as_batch([s])))[0, :n]
    np.testing.assert_allclose(got[at : at + n], want, rtol=1e-5, atol=1e-5)
    at += n
  g_packed = grad_total(params, as_batch([packed]))
  g_single = grad_total(params, as_batch(single))  # three rows, one conversation each
  for a, b in zip(jax.tree.leaves(g_packed), jax.tree.leaves(g_single)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  if kind == "soft_topk":  # the hard eval gates pass no gradient to the predictor
    assert float(jnp.abs(g_packed["predictor"]["head_out"]["kernel"]).max()) > 0
  ce, tokens = weighted_cross_entropy(
    IFPModel(cfg).apply({"params": params}, as_batch([packed]).model_inputs()).logits,
    as_batch([packed]).targets,
    as_batch([packed]).loss_weights,
  )
  assert float(tokens) == sum(float(e["loss_weights"].sum()) for e in examples)
