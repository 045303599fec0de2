"""Attention implementations agree (f32, 1e-5): padding, segments, KV cache, GQA."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.model import attention
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder, KVCache

IMPLS = ("xla", "dot_product")


def _qkv(b=2, t=12, s=12, n=6, kv=2, hd=8, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (b, t, n, hd))
  k = jax.random.normal(ks[1], (b, s, kv, hd))
  v = jax.random.normal(ks[2], (b, s, kv, hd))
  return q, k, v


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_impls_agree_with_padding_segments_and_cache_offset():
  q, k, v = _qkv()
  valid = jnp.asarray(np.arange(12)[None] >= np.array([[0], [3]]))  # row 1 left-padded by 3
  seg = jnp.asarray([[0] * 5 + [1] * 7, [0] * 3 + [1] * 4 + [2] * 5])
  masks = {
    "causal": attention.make_mask(jnp.arange(12), jnp.ones((2, 12), bool)),
    "padding": attention.make_mask(jnp.arange(12), valid),
    "segments": attention.make_mask(jnp.arange(12), valid, seg, seg),
  }
  for name, mask in masks.items():
    xla, dpa = (attention.attend(q, k, v, mask, impl=i) for i in IMPLS)
    np.testing.assert_allclose(xla, dpa, atol=1e-5, rtol=0, err_msg=name)
  # Queries at slots 8..11 of a 12-slot cache (the cache-offset case), MHA (N == KV).
  q4, k4, v4 = _qkv(t=4, n=2, kv=2, seed=1)
  mask = attention.make_mask(8 + jnp.arange(4), valid)
  xla, dpa = (attention.attend(q4, k4, v4, mask, impl=i) for i in IMPLS)
  np.testing.assert_allclose(xla, dpa, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_segments_confine_attention(impl):
  """A packed row == its segments attended one by one (positions are the caller's concern)."""
  q, k, v = _qkv(b=1)
  seg = jnp.asarray([[0] * 5 + [1] * 7])
  mask = attention.make_mask(jnp.arange(12), jnp.ones((1, 12), bool), seg, seg)
  packed = attention.attend(q, k, v, mask, impl=impl)
  for lo, hi in ((0, 5), (5, 12)):
    n = hi - lo
    own = attention.make_mask(jnp.arange(n), jnp.ones((1, n), bool))
    alone = attention.attend(q[:, lo:hi], k[:, lo:hi], v[:, lo:hi], own, impl=impl)
    np.testing.assert_allclose(packed[:, lo:hi], alone, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match="segment ids need both"):
    attention.make_mask(jnp.arange(12), jnp.ones((1, 12), bool), seg, None)


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_decoder_impls_agree_prefill_and_cached_decode():
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
  init = jax.jit(Decoder(cfg).init)
  params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  ids = jax.random.randint(jax.random.key(1), (2, 10), 0, 64)
  attn = jnp.asarray(np.arange(10)[None] >= np.array([[0], [4]]))  # left padding
  outs = {}
  for impl in IMPLS:
    model = Decoder(cfg.replace(attention_impl=impl))
    pre = model.apply({"params": params}, ids, attention_mask=attn, cache=KVCache.init(cfg, 2, 16))
    step = model.apply(
      {"params": params}, ids[:, :1], attention_mask=jnp.ones((2, 1), bool), cache=pre.cache
    )
    # Left-padding queries see no key: what they output is undefined and differs by impl.
    outs[impl] = (pre.logits[0], pre.logits[1, 4:], step.logits)
  for a, b in zip(outs["xla"], outs["dot_product"]):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_causal_blocks_equal_the_full_scores():
  """attend(causal=True) (query blocks against the keys up to their end) == the full product,
  with padding and segments, on every query that sees a key; 2 and 4 blocks."""
  assert [attention.causal_blocks(t) for t in (1, 64, 100, 128, 200, 256, 512)] == [
    1,
    1,
    1,
    2,
    2,
    4,
    4,
  ]
  for t in (128, 256):
    q, k, v = _qkv(t=t, s=t, seed=t)
    valid = jnp.asarray(np.arange(t)[None] >= np.array([[0], [3]]))  # row 1 left-padded by 3
    seg = jnp.asarray((np.arange(t)[None] * 3 // t).repeat(2, 0))
    for mask in (
      attention.make_mask(jnp.arange(t), valid),
      attention.make_mask(jnp.arange(t), valid, seg, seg),
    ):
      blocked = attention.attend(q, k, v, mask, impl="xla", causal=True)
      full = attention.attend(q, k, v, mask, impl="xla")
      seen = np.asarray(mask.any(-1))
      np.testing.assert_allclose(np.asarray(blocked)[seen], np.asarray(full)[seen], atol=1e-6)
      dpa = attention.attend(q, k, v, mask, impl="dot_product", causal=True)
      np.testing.assert_allclose(np.asarray(dpa)[seen], np.asarray(full)[seen], atol=1e-5)
  q, k, v = _qkv(t=4)
  with pytest.raises(ValueError, match="causal=True needs S == T"):
    attention.attend(q, k, v, jnp.ones((2, 4, 12), bool), impl="xla", causal=True)


def test_prefill_into_an_empty_cache_reads_only_its_keys():
  """Decoder(empty_cache=True) (generate's prefill): the same logits and cache as attending
  over the whole cache, and the next decode step agrees."""
  cfg = LlamaConfig(vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2)
  init = jax.jit(Decoder(cfg).init)
  params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  ids = jax.random.randint(jax.random.key(1), (2, 128), 0, 64)  # 2 causal blocks
  attn = jnp.asarray(np.arange(128)[None] >= np.array([[0], [5]]))
  model = Decoder(cfg)
  outs = []
  for empty in (False, True):
    pre = model.apply(
      {"params": params},
      ids,
      attention_mask=attn,
      cache=KVCache.init(cfg, 2, 160),
      empty_cache=empty,
    )
    step = model.apply(
      {"params": params}, ids[:, :1], attention_mask=jnp.ones((2, 1), bool), cache=pre.cache
    )
    # Left-padding slots see no key: their outputs (and cache entries, never read) may differ.
    real = (
      pre.cache.k[:, 0],
      pre.cache.k[:, 1, :, 5:],
      pre.cache.v[:, 0],
      pre.cache.v[:, 1, :, 5:],
    )
    outs.append((pre.logits[0], pre.logits[1, 5:], *real, pre.cache.valid, step.logits))
  for a, b in zip(*outs):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_impl_names_defaults_and_hf_config():
  assert attention.resolve_impl("auto", "cpu") == "xla"
  assert attention.resolve_impl("auto", "gpu") == "dot_product"
  assert attention.resolve_impl("dot_product", "cpu") == "dot_product"
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    attention.resolve_impl("flash")
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    LlamaConfig(attention_impl="flash")
  cfg = LlamaConfig(attention_impl="dot_product")
  assert "attention_impl" not in cfg.to_hf_dict()
  assert LlamaConfig(**cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="attention mask"):
    q, k, v = _qkv()
    attention.attend(q, k, v, jnp.ones((2, 12, 5), bool), impl="xla")


def test_attend_cached_equals_attend_over_the_written_cache():
  """The decode path (cache unread at this call's slots, its keys passed alongside) == writing
  them into the cache and attending over it: T = 1 and 3 new tokens, left padding, GQA."""
  b, s, n, kv, hd, start = 2, 16, 6, 2, 8, 9
  ks = jax.random.split(jax.random.key(3), 5)
  kc = jax.random.normal(ks[0], (b, kv, s, hd))
  vc = jax.random.normal(ks[1], (b, kv, s, hd))
  for t in (1, 3):
    q = jax.random.normal(ks[2], (b, t, n, hd))
    kn = jax.random.normal(ks[3], (b, kv, t, hd))
    vn = jax.random.normal(ks[4], (b, kv, t, hd))
    valid = jnp.asarray(np.arange(s)[None] >= np.array([[0], [4]])) & (jnp.arange(s) < start + t)
    mask = attention.make_mask(start + jnp.arange(t), valid)
    k = jax.lax.dynamic_update_slice_in_dim(kc, kn, start, axis=2)
    v = jax.lax.dynamic_update_slice_in_dim(vc, vn, start, axis=2)
    want = attention.attend(q, k, v, mask, impl="xla", heads_major_kv=True)
    got = attention.attend_cached(q, kc, vc, kn, vn, mask, jnp.int32(start))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=f"t={t}")
  with pytest.raises(ValueError, match="attend_cached shapes"):
    attention.attend_cached(q, kc, vc, kn[:, :1], vn, mask, jnp.int32(start))
