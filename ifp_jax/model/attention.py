"""One attention function for every backend: causal / padding / segment masks, KV cache, GQA.

`attend(q, k, v, mask, impl=...)` computes softmax(q k^T / sqrt(hd) + mask) v with query heads
grouped over the KV heads they share (GQA; MHA when N == KV). What a query may see is one
boolean `mask` [B, T, S] that `make_mask` builds from query slots (causal, offset by the
KV-cache index), key validity (padding; filled cache slots) and segment ids (packed rows:
attention confined to the query's own segment). Implementations (`LlamaConfig.attention_impl`):

  xla          the hand-written einsums, heads-major: scores [B, KV, G*T, S] in f32, masked,
               f32 softmax. With `causal=True` (queries at key slots 0..T-1, S == T: training,
               scoring, a prefill into an empty cache) the queries go in `causal_blocks(T)`
               blocks, block i against keys [0, end of block i) only: the causal upper
               triangle is not computed (~0.6x the work at 4 blocks);
  dot_product  `jax.nn.dot_product_attention`. On a GPU with a 16-bit compute dtype it asks
               for cuDNN's fused (flash) kernel (implementation='cudnn'); elsewhere (CPU, or
               f32, which cuDNN's fused kernel does not take) its XLA implementation;
  auto         (default) dot_product on GPU, xla elsewhere (on CPU both lower to the same
               einsums: benchmarks/README.md, "attention").

Segment masks on cuDNN: the public `jax.nn.dot_product_attention` expresses only
causal / sequence-length masks natively; packed segments (cuDNN's q/kv offsets) are reachable
only through a private jax module. So a segment (or left-padding, or cache) mask is passed as
the boolean `mask`, which jax turns into an additive bias [B, 1, T, S] read by the same fused
cuDNN kernel: still fused and O(T) memory per query row, but without the causal tile skipping
of MaskType.CAUSAL. Packed batches thus take cuDNN-with-bias on GPU and the XLA einsum on CPU.

Measured on 2 CPU cores at the SmolLM2 shape (9/3 heads, hd 64, 30 layers): the former
[B, KV, G, T, S] einsum took 464 ms for a 512-token prefill, heads-major 229 ms, with 4 causal
blocks 162 ms (torch's causal sdpa 163 ms); fwd+bwd at 2 x 256: 706 -> 493 ms; decode (one
query, 576 keys) 11.2 -> 8.2 ms at batch 1. benchmarks/README.md, "attention".

Rows whose query sees no key at all (left-padding slots) get a uniform average of values (of
all keys, or of their causal block's); their outputs are never used.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IMPLS = ("auto", "xla", "dot_product")


def resolve_impl(impl: str, backend: str | None = None) -> str:
  """'auto' -> the default for `backend` (default: jax's default backend); checks the name."""
  if impl not in IMPLS:
    raise ValueError(f"attention_impl={impl!r}; expected one of {IMPLS}")
  if impl != "auto":
    return impl
  return "dot_product" if (backend or jax.default_backend()) == "gpu" else "xla"


def make_mask(
  q_slots: Array,
  key_valid: Array,
  q_segment_ids: Array | None = None,
  kv_segment_ids: Array | None = None,
) -> Array:
  """Which key slots each query sees: [B, T, S] bool.

  q_slots [T] or [B, T]: each query's slot in the key sequence (start + arange(T) with a cache);
  key_valid [B, S]: real (non-pad, filled) key slots. Causal by slot; with segment ids
  ([B, T], [B, S] ints) a query sees only keys of its own segment.
  """
  q_slots = jnp.broadcast_to(q_slots, (key_valid.shape[0], q_slots.shape[-1]))
  s = key_valid.shape[1]
  allowed = (jnp.arange(s)[None, None, :] <= q_slots[:, :, None]) & key_valid[:, None, :]
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("segment ids need both q_segment_ids [B, T] and kv_segment_ids [B, S]")
  if q_segment_ids is not None:
    allowed &= q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return allowed


def causal_blocks(t: int) -> int:
  """Query blocks for a causal attention over t tokens: 4 (2, 1) while blocks keep >= 64
  queries (fewer, larger matmuls below that gain nothing)."""
  return next(n for n in (4, 2, 1) if t % n == 0 and t // n >= 64 or n == 1)


def attend(
  q: Array,
  k: Array,
  v: Array,
  mask: Array | None,
  *,
  impl: str = "auto",
  causal: bool = False,
  heads_major_kv: bool = False,
) -> Array:
  """q [B, T, N, hd], k/v [B, S, KV, hd] (N a multiple of KV), mask [B, T, S] bool or None
  (no masking) -> [B, T, N, hd] in q's dtype. heads_major_kv: k/v come as [B, KV, S, hd]
  (the KV cache's layout: the xla implementation reads it without a transpose).

  causal: the caller's promise that query i sits at key slot i (S == T) and `mask` never lets
  it see a later slot (make_mask's rule without a cache offset); the xla implementation then
  skips the blocks above the diagonal. Results equal causal=False to float rounding."""
  impl = resolve_impl(impl)
  if heads_major_kv and causal:
    raise ValueError("causal=True is for this call's own keys, not a heads-major cache")
  if heads_major_kv and impl != "xla":  # jax.nn.dot_product_attention takes [B, S, KV, hd]
    k, v, heads_major_kv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), False
  b, t, n, hd = q.shape
  kv, s = (k.shape[1], k.shape[2]) if heads_major_kv else (k.shape[2], k.shape[1])
  if n % kv or k.shape != v.shape or k.shape[0] != b or k.shape[3] != hd:
    layout = "[B, KV, S, hd]" if heads_major_kv else "[B, S, KV, hd]"
    raise ValueError(
      f"attention shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; want "
      f"q [B, T, N, hd], k = v {layout} with N a multiple of KV"
    )
  if mask is not None and tuple(mask.shape) != (b, t, s):
    raise ValueError(f"attention mask {tuple(mask.shape)}; want [B, T, S] = {(b, t, s)}")
  if causal and (s != t or mask is None):
    raise ValueError(f"causal=True needs S == T and a mask; got T={t}, S={s}")
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  if impl == "xla":
    kh, vh = (k, v) if heads_major_kv else (k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))
    n_blocks = causal_blocks(t) if causal else 1
    if n_blocks == 1:
      return _xla(q, kh, vh, mask)
    c = t // n_blocks  # block i: its queries against keys [0, (i + 1) c)
    parts = [
      _xla(
        q[:, i * c : (i + 1) * c],
        kh[:, :, : (i + 1) * c],
        vh[:, :, : (i + 1) * c],
        mask[:, i * c : (i + 1) * c, : (i + 1) * c],
      )
      for i in range(n_blocks)
    ]
    return jnp.concatenate(parts, axis=1)
  cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
  return jax.nn.dot_product_attention(
    q,
    k,
    v,
    mask=None if mask is None else mask[:, None],
    scale=1.0 / math.sqrt(hd),
    implementation="cudnn" if cudnn else None,
  )


def attend_cached(
  q: Array,
  k_cache: Array,
  v_cache: Array,
  k_new: Array,
  v_new: Array,
  mask: Array,
  cache_index: Array,
) -> Array:
  """Decode-time attention of this call's queries over a KV cache that does not hold their own
  keys yet, and over those keys, without writing them into the cache first (xla
  implementation).

  q [B, T, N, hd]; k_cache/v_cache [B, KV, S, hd] (heads-major, slots >= cache_index not read
  as keys of this call); k_new/v_new [B, KV, T, hd], this call's keys at slots cache_index + i;
  mask [B, T, S] as make_mask builds it with this call's slots filled. Equals `attend` over
  the cache with the new keys written at cache_index, to float rounding: one softmax over the
  cache's scores and the new keys' scores side by side. Why: writing the new keys into each
  layer's cache slice inside the layer scan made XLA:CPU copy that slice every decode step
  (benchmarks/README.md, "Latest numbers", decode).
  """
  b, t, n, hd = q.shape
  kv, s = k_cache.shape[1], k_cache.shape[2]
  if k_new.shape != (b, kv, t, hd) or k_cache.shape != v_cache.shape or k_new.shape != v_new.shape:
    raise ValueError(
      f"attend_cached shapes: q {tuple(q.shape)}, cache {tuple(k_cache.shape)}, new keys "
      f"{tuple(k_new.shape)}; want q [B, T, N, hd], cache [B, KV, S, hd], new [B, KV, T, hd]"
    )
  old = mask & (jnp.arange(s) < cache_index)[None, None]  # the new keys' slots come from k_new
  new = jax.lax.dynamic_slice_in_dim(mask, cache_index, t, axis=2)  # [B, T, T]
  blocks = [(k.astype(q.dtype), v.astype(q.dtype)) for k, v in ((k_cache, v_cache), (k_new, v_new))]
  return _xla_blocks(q, blocks, jnp.concatenate([old, new], axis=-1))


def _xla(q: Array, kh: Array, vh: Array, mask: Array | None) -> Array:
  """q [B, T, N, hd], kh/vh [B, KV, S, hd]. Each KV head's G query heads are stacked into G*T
  rows of one plain batched matmul [B, KV] x [G*T, hd] x [hd, S]. The former
  "btkgd,bskd->bkgts" einsum made XLA:CPU transpose around its dots (2x slower prefill, see the
  module docstring)."""
  return _xla_blocks(q, [(kh, vh)], mask)


def _xla_blocks(q: Array, blocks: list[tuple[Array, Array]], mask: Array | None) -> Array:
  """_xla over keys given as blocks [(kh, vh) [B, KV, S_i, hd]] side by side, one softmax over
  all of them; mask [B, T, sum S_i]. Blocks spare the caller a concatenation (a copy) of the
  keys, as attend_cached needs."""
  b, t, n, hd = q.shape
  kv, s = blocks[0][0].shape[1], sum(k.shape[2] for k, _ in blocks)
  g = n // kv
  qh = q.reshape(b, t, kv, g, hd).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, hd)
  scores = [jnp.einsum("bkqd,bksd->bkqs", qh, k) for k, _ in blocks]
  logits = jnp.concatenate(scores, axis=-1).astype(jnp.float32) / math.sqrt(hd)
  if mask is not None:
    m = jnp.broadcast_to(mask[:, None, None], (b, kv, g, t, s)).reshape(b, kv, g * t, s)
    logits = jnp.where(m, logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  ends = np.cumsum([v.shape[2] for _, v in blocks])
  outs = [
    jnp.einsum("bkqs,bksd->bkqd", probs[..., end - v.shape[2] : end], v)
    for (_, v), end in zip(blocks, ends)
  ]
  out = sum(outs[1:], outs[0])
  return out.reshape(b, kv, g, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, n, hd)
