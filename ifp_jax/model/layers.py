"""Llama building blocks: RMSNorm, rotary embeddings, GQA attention with a KV cache, masked SwiGLU.

Parameter names follow HF (`q_proj`, `gate_proj`, `input_layernorm`, ...) so weight I/O is a
rename + transpose. Every parameter carries logical axis names; `ifp_jax.train.sharding` maps
them to
mesh axes. `MaskedSwiGLU` is the one place where FFN masks touch the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ifp_jax.model import attention
from ifp_jax.model.config import LlamaConfig, to_dtype
from ifp_jax.model.swiglu import hidden, swiglu

Array = jax.Array

constrain = nn.with_logical_constraint


def _init(cfg: LlamaConfig, axes: tuple[str, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes)


class RMSNorm(nn.Module):
  """HF LlamaRMSNorm: normalise in f32, scale by `weight` ('norm',), cast back."""

  eps: float
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    weight = self.param(
      "weight",
      nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      (x.shape[-1],),
      self.param_dtype,
    )
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return weight.astype(self.dtype) * x32.astype(self.dtype)


def rope_inv_freq(cfg: LlamaConfig) -> Array:
  """Inverse frequencies [head_dim/2], with HF's Llama-3 `rope_scaling` when configured."""
  hd = cfg.resolved_head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
  rs = cfg.rope_scaling
  if rs is None:
    return inv_freq
  factor = rs.factor
  low, high = rs.low_freq_factor, rs.high_freq_factor
  old_ctx = rs.original_max_position_embeddings
  low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  smooth = (old_ctx / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def rope_cos_sin(cfg: LlamaConfig, positions: Array) -> tuple[Array, Array]:
  """cos, sin [B, T, head_dim] for integer positions [B, T] (HF half-split layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * rope_inv_freq(cfg)
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
  """x [B, T, N, hd]; HF `rotate_half` convention, computed in f32."""
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  out = x32 * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


class Proj(nn.Module):
  """Linear map contracting the last `in_dims` axes of x into `features` (kernel in+features).

  (Replaces nn.DenseGeneral, whose flat-kernel init clashes with multi-axis logical names.)
  """

  features: tuple[int, ...]
  axes: tuple[str, ...]  # logical names of the kernel's axes
  cfg: LlamaConfig
  in_dims: int = 1
  use_bias: bool = False  # bias over `features` (Qwen2's q/k/v)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    shape = x.shape[x.ndim - self.in_dims :] + tuple(self.features)
    pdtype = to_dtype(self.cfg.param_dtype)
    kernel = self.param("kernel", _init(self.cfg, self.axes), shape, pdtype)
    dtype = to_dtype(self.cfg.dtype)
    y = jnp.tensordot(x.astype(dtype), kernel.astype(dtype), axes=self.in_dims)
    if self.use_bias:
      bias_axes = self.axes[len(self.axes) - len(self.features) :]
      init = nn.with_logical_partitioning(nn.initializers.zeros, bias_axes)
      y = y + self.param("bias", init, tuple(self.features), pdtype).astype(dtype)
    return y


class Attention(nn.Module):
  """Causal grouped-query attention; optional KV cache slice for this layer.

  x [B, T, D]; cos/sin [B, T, hd]; `allowed` [B, T, S] bool (which key slots each query sees);
  cache (k, v) [B, KV, S, hd] (heads-major: decode reads it without a transpose), this call's
  keys seen at `cache_index`. Returns (out, (k, v) of this call [B, KV, T, hd] or None): the
  Decoder writes them into the whole cache once, after the layer scan (in place in a decode
  loop, where returning each layer's updated cache copied all of it every step).
  `aligned`: query i sits at key slot i (no cache, or an empty one: index 0), so the
  queries need only this call's keys (`allowed` is then [B, T, T]) and the causal blocks
  (attention.attend(causal=True)).
  """

  cfg: LlamaConfig
  aligned: bool = False

  @nn.compact
  def __call__(self, x, cos, sin, allowed, cache=None, cache_index=None):
    cfg = self.cfg
    dtype = to_dtype(cfg.dtype)
    h, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim

    def proj(name, n, axes):
      return Proj((n, hd), axes, cfg, use_bias=cfg.qkv_bias, name=name)(x)

    q = proj("q_proj", h, ("embed", "heads", "head_dim"))
    k = proj("k_proj", kv, ("embed", "kv_heads", "head_dim"))
    v = proj("v_proj", kv, ("embed", "kv_heads", "head_dim"))
    if cfg.qk_norm:  # Qwen3: RMSNorm over head_dim of every head, before rope
      pdtype = to_dtype(cfg.param_dtype)
      q = RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name="q_norm")(q)
      k = RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name="k_norm")(k)
    q = constrain(apply_rope(q, cos, sin), ("act_batch", "act_len", "act_heads", None))
    k = constrain(apply_rope(k, cos, sin), ("act_batch", "act_len", "act_kv_heads", None))
    v = constrain(v, ("act_batch", "act_len", "act_kv_heads", None))

    new_kv, heads_major = None, False
    decode = cache is not None and not self.aligned  # queries also see earlier cache slots
    if cache is not None:
      ck, cv = cache
      k, v = k.astype(ck.dtype), v.astype(cv.dtype)
      new_kv = (k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))
    if decode and attention.resolve_impl(cfg.attention_impl) == "xla":
      # The cache is read as it is; this call's keys join the softmax from new_kv.
      out = attention.attend_cached(q.astype(dtype), ck, cv, *new_kv, allowed, cache_index)
    else:
      if decode:
        k = jax.lax.dynamic_update_slice_in_dim(ck, new_kv[0], cache_index, axis=2)
        v = jax.lax.dynamic_update_slice_in_dim(cv, new_kv[1], cache_index, axis=2)
        heads_major = True
      out = attention.attend(
        q.astype(dtype),
        k,
        v,
        allowed,
        impl=cfg.attention_impl,
        causal=self.aligned,
        heads_major_kv=heads_major,
      )
    out = constrain(out, ("act_batch", "act_len", "act_heads", None))
    out = Proj((cfg.hidden_size,), ("heads", "head_dim", "embed"), cfg, in_dims=2, name="o_proj")(
      out
    )
    return out, new_kv


class MaskedSwiGLU(nn.Module):
  """y = (silu(x W_gate) * (x W_up * mask)) W_down.

  x [B, T, D]; mask None or broadcastable to [B, T, F] (per sequence [B, 1, F] or per token).
  Masking unit i == deleting column i of W_gate/W_up and row i of W_down, which is what
  `ifp_jax.model.gather` does for inference.
  """

  cfg: LlamaConfig

  @nn.compact
  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    f = cfg.intermediate_size
    if mask is not None and mask.shape[-1] != f:
      raise ValueError(
        f"FFN mask has {mask.shape[-1]} units (shape {mask.shape}); "
        f"the layer has intermediate_size={f}"
      )
    d = cfg.hidden_size
    w_gate = _Kernel((d, f), _init(cfg, ("embed", "mlp")), pdtype, name="gate_proj")()
    w_up = _Kernel((d, f), _init(cfg, ("embed", "mlp")), pdtype, name="up_proj")()
    w_down = _Kernel((f, d), _init(cfg, ("mlp", "embed")), pdtype, name="down_proj")()
    w_gate, w_up, w_down = (w.astype(dtype) for w in (w_gate, w_up, w_down))
    # 2-D [B*T, D] matmuls and the mask on `up` (same math): on XLA:CPU the 3-D form's backward
    # wrote the SwiGLU gradient transposed in slow loop fusions, and a mask on silu*up doubled
    # their cost (benchmarks/train_throughput.py --flat_mlp: 1.3x faster step at SmolLM2 shape).
    b, t, _ = x.shape
    x2 = x.reshape(b * t, d).astype(dtype)
    if mask is not None:
      mask = jnp.broadcast_to(mask.astype(dtype), (b, t, f)).reshape(b * t, f)
    if self.is_mutable_collection("intermediates"):
      # Training-free selection (ifp_jax/infer/griffin.py) reads Z = silu(x W_gate) * (x W_up).
      h = constrain(hidden(x2 @ w_gate, x2 @ w_up, mask), ("act_batch", "act_mlp"))
      self.sow("intermediates", "ffn_act", h.reshape(b, t, f))
      return (h @ w_down).reshape(b, t, d)
    # The same forward with a hand-written backward (model/swiglu.py: faster on XLA:CPU).
    return swiglu(x2, w_gate, w_up, w_down, mask).reshape(b, t, d)


class _Kernel(nn.Module):
  """One weight named `<name>/kernel`, the path nn.Dense gave it (checkpoints, HF import)."""

  shape: tuple[int, ...]
  init_fn: Callable
  param_dtype: Any

  @nn.compact
  def __call__(self) -> Array:
    return self.param("kernel", self.init_fn, self.shape, self.param_dtype)


class DecoderLayer(nn.Module):
  """Pre-norm Llama block. Scanned over layers: (x, per-layer inputs) -> (x, new cache)."""

  cfg: LlamaConfig
  aligned: bool = False  # see Attention

  @nn.compact
  def __call__(self, x, layer_in, cos, sin, allowed, cache_index, mask_index):
    """layer_in = (mask [B, C, F] or None, (k, v) cache or None); mask_index [B, T] picks the
    chunk mask each token uses (None when C == 1)."""
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    mask, cache = layer_in
    if mask is not None and mask_index is not None:
      mask = jnp.take_along_axis(mask, mask_index[:, :, None].astype(jnp.int32), axis=1)
    norm = lambda name: RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name=name)  # noqa: E731
    attn_out, new_cache = Attention(cfg, self.aligned, name="self_attn")(
      norm("input_layernorm")(x), cos, sin, allowed, cache, cache_index
    )
    x = x + attn_out
    x = x + MaskedSwiGLU(cfg, name="mlp")(norm("post_attention_layernorm")(x), mask)
    x = constrain(x, ("act_batch", "act_len", "act_embed"))
    return x, new_cache
