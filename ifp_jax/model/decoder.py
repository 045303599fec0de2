"""Llama-compatible decoder with per-layer FFN masks, layers under `nn.scan`.

Parameters (logical axes in brackets; scanned leaves get a leading 'layers' axis):
  embed_tokens/embedding [vocab, embed]
  layers/{input_layernorm,post_attention_layernorm}/weight [layers, norm]
  layers/self_attn/{q,k,v}_proj/kernel [layers, embed, heads|kv_heads, head_dim]
  layers/self_attn/o_proj/kernel [layers, heads, head_dim, embed]
  layers/mlp/{gate,up}_proj/kernel [layers, embed, mlp];
  layers/mlp/down_proj/kernel [layers, mlp, embed]
  norm/weight [norm]; lm_head/kernel [embed, vocab] (untied only)
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ifp_jax.model.attention import make_mask
from ifp_jax.model.config import LlamaConfig, to_dtype
from ifp_jax.model.layers import DecoderLayer, RMSNorm, constrain, rope_cos_sin

Array = jax.Array

_REMAT_POLICIES = {
  "full": None,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@flax.struct.dataclass
class KVCache:
  """Keys/values [layers, B, kv_heads, S, hd] (heads-major, as attention reads them); `valid`
  [B, S] marks filled non-pad slots;
  `index` is the next slot to write (same for every row: prompts are left-padded)."""

  k: Array
  v: Array
  valid: Array
  index: Array

  @classmethod
  def init(cls, cfg: LlamaConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    dtype = dtype or to_dtype(cfg.dtype)
    shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.resolved_head_dim)
    return cls(
      jnp.zeros(shape, dtype),
      jnp.zeros(shape, dtype),
      jnp.zeros((batch, max_len), bool),
      jnp.zeros((), jnp.int32),
    )


@flax.struct.dataclass
class DecoderOutput:
  logits: Optional[Array]  # [B, T, vocab] f32, None when compute_logits=False
  hidden: Array  # final-normed hidden states [B, T, embed]
  cache: Optional[KVCache]


def segment_positions(segment_ids: Array) -> Array:
  """[B, T] segment ids -> each token's offset from the first token of its segment."""
  t = segment_ids.shape[1]
  idx = jnp.arange(t, dtype=jnp.int32)[None]
  starts = jnp.concatenate(
    [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
  )
  return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def check_ffn_masks(cfg: LlamaConfig, masks: Array, batch: int, mask_index) -> None:
  """Masks are [B, L, F] (one per sequence) or [B, C, L, F] routed per token by mask_index."""
  want = (cfg.num_hidden_layers, cfg.intermediate_size)
  if masks.ndim not in (3, 4) or masks.shape[0] != batch or tuple(masks.shape[-2:]) != want:
    raise ValueError(
      f"FFN masks must have shape [batch={batch}, layers={want[0]}, d_ff={want[1]}] or "
      f"[batch, chunks, layers, d_ff]; got {tuple(masks.shape)}"
    )
  if masks.ndim == 4 and masks.shape[1] > 1 and mask_index is None:
    raise ValueError(f"masks with {masks.shape[1]} chunks need mask_index [B, T]")


class Decoder(nn.Module):
  """input_ids [B, T] -> DecoderOutput. FFN masks multiply the intermediate units per layer."""

  cfg: LlamaConfig

  @nn.compact
  def __call__(
    self,
    input_ids: Array,
    *,
    ffn_masks: Array | None = None,
    mask_index: Array | None = None,
    positions: Array | None = None,
    attention_mask: Array | None = None,
    segment_ids: Array | None = None,
    cache: KVCache | None = None,
    empty_cache: bool = False,
    compute_logits: bool = True,
  ) -> DecoderOutput:
    """`segment_ids` [B, T] (packed rows, no cache): a token attends only to its own segment
    and, unless `positions` are given, its position counts from the segment's first token.
    `empty_cache`: the caller's promise that `cache` holds nothing yet (index 0, a prefill);
    attention then reads only this call's keys, causal blocks skipped above the diagonal."""
    cfg = self.cfg
    dtype, pdtype = to_dtype(cfg.dtype), to_dtype(cfg.param_dtype)
    b, t = input_ids.shape
    embed = nn.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      dtype=dtype,
      param_dtype=pdtype,
      embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")
      ),
      name="embed_tokens",
    )
    x = constrain(embed(input_ids.astype(jnp.int32)), ("act_batch", "act_len", "act_embed"))

    # Key-slot visibility: causal by slot, minus padding.
    token_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    start = jnp.zeros((), jnp.int32) if cache is None else cache.index
    if segment_ids is not None and cache is not None:
      raise ValueError("segment_ids (packed rows) are for training / scoring, not a KV cache")
    if positions is None:
      positions = (
        jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids is None
        else segment_positions(segment_ids)
      )
    if cache is None:
      key_valid = token_valid
    else:
      key_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, token_valid, start, axis=1)
    aligned = cache is None or empty_cache  # query i at key slot i: only this call's keys
    allowed = (
      make_mask(jnp.arange(t), token_valid, segment_ids, segment_ids)
      if aligned
      else make_mask(start + jnp.arange(t), key_valid)
    )
    cos, sin = rope_cos_sin(cfg, positions)

    # Per-layer scan inputs: masks [L, B, C, F] and cache [L, B, KV, S, hd].
    layer_masks = None
    if ffn_masks is not None:
      check_ffn_masks(cfg, ffn_masks, b, mask_index)
      m = ffn_masks if ffn_masks.ndim == 4 else ffn_masks[:, None]
      layer_masks = jnp.moveaxis(m, 2, 0)
      if layer_masks.shape[2] == 1:
        mask_index = None
    layer_cache = None if cache is None else (cache.k, cache.v)

    block = DecoderLayer
    if cfg.remat != "none":
      block = nn.remat(DecoderLayer, prevent_cse=False, policy=_REMAT_POLICIES[cfg.remat])
    stack = nn.scan(
      block,
      variable_axes={"params": 0, "intermediates": 0},
      split_rngs={"params": True},
      in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_hidden_layers,
      unroll=cfg.scan_unroll,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, new_layer_cache = stack(cfg, aligned, name="layers")(
      x, (layer_masks, layer_cache), cos, sin, allowed, start, mask_index
    )

    x = RMSNorm(cfg.rms_norm_eps, dtype, pdtype, name="norm")(x)
    new_cache = None
    if cache is not None:  # this call's keys [L, B, KV, T, hd], written once for all layers
      k, v = (
        jax.lax.dynamic_update_slice_in_dim(c, new, start, axis=3)
        for c, new in zip((cache.k, cache.v), new_layer_cache)
      )
      new_cache = KVCache(k, v, key_valid, start + t)
    logits = None
    if compute_logits:
      if cfg.tie_word_embeddings:
        logits = embed.attend(x)
      else:
        logits = nn.Dense(
          cfg.vocab_size,
          use_bias=False,
          dtype=dtype,
          param_dtype=pdtype,
          kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(cfg.initializer_range), ("embed", "vocab")
          ),
          name="lm_head",
        )(x)
      logits = constrain(logits.astype(jnp.float32), ("act_batch", "act_len", "act_vocab"))
    return DecoderOutput(logits=logits, hidden=x, cache=new_cache)
