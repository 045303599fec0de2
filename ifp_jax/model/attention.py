"""One attention function for every backend: causal / padding / segment masks, KV cache, GQA.

`attend(q, k, v, mask, impl=...)` computes softmax(q k^T / sqrt(hd) + mask) v with query heads
grouped over the KV heads they share (GQA; MHA when N == KV). What a query may see is one
boolean `mask` [B, T, S] that `make_mask` builds from query slots (causal, offset by the
KV-cache index), key validity (padding; filled cache slots) and segment ids (packed rows:
attention confined to the query's own segment). Implementations (`LlamaConfig.attention_impl`):

  xla          the hand-written einsum: scores [B, KV, G, T, S] in f32, masked, f32 softmax;
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

Rows whose query sees no key at all (left-padding slots) get a uniform average of the values in
both implementations; their outputs are never used.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def attend(q: Array, k: Array, v: Array, mask: Array | None, *, impl: str = "auto") -> Array:
  """q [B, T, N, hd], k/v [B, S, KV, hd] (N a multiple of KV), mask [B, T, S] bool or None
  (no masking) -> [B, T, N, hd] in q's dtype."""
  b, t, n, hd = q.shape
  kv = k.shape[2]
  if n % kv or k.shape != v.shape or k.shape[0] != b or k.shape[3] != hd:
    raise ValueError(
      f"attention shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; want "
      f"q [B, T, N, hd], k = v [B, S, KV, hd] with N a multiple of KV"
    )
  if mask is not None and tuple(mask.shape) != (b, t, k.shape[1]):
    raise ValueError(f"attention mask {tuple(mask.shape)}; want [B, T, S] = {(b, t, k.shape[1])}")
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  if resolve_impl(impl) == "xla":
    return _xla(q, k, v, mask)
  cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
  return jax.nn.dot_product_attention(
    q,
    k,
    v,
    mask=None if mask is None else mask[:, None],
    scale=1.0 / math.sqrt(hd),
    implementation="cudnn" if cudnn else None,
  )


def _xla(q: Array, k: Array, v: Array, mask: Array | None) -> Array:
  b, t, n, hd = q.shape
  kv = k.shape[2]
  q = q.reshape(b, t, kv, n // kv, hd)  # group query heads by the KV head they share
  logits = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / math.sqrt(hd)
  if mask is not None:
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, n, hd)
