"""Sparsity predictor: a small decoder reads the prompt, a 2-layer head scores every FFN unit.

prompt ids [N, P] (right-padded) -> backbone hidden at the last non-pad token [N, d_pred]
-> Dense(hidden) -> activation [- head_center] -> Dense(L * d_ff) -> scores [N, L, d_ff] (f32).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig
from ifp_jax.model.decoder import Decoder
from ifp_jax.model.layers import constrain

Array = jax.Array

ACTIVATIONS = {
  "gelu": nn.gelu,
  "relu": nn.relu,
  "silu": nn.silu,
  "tanh": jnp.tanh,
  "identity": lambda x: x,
}


class SparsityPredictor(nn.Module):
  backbone: LlamaConfig
  head: PredictorHeadConfig
  num_layers: int  # of the masked LLM
  d_ff: int  # of the masked LLM

  @nn.compact
  def __call__(self, ids: Array, lengths: Array) -> Array:
    """ids [N, P] int, lengths [N] (>= 1) -> scores [N, num_layers, d_ff] f32."""
    if self.head.activation not in ACTIVATIONS:
      raise ValueError(
        f"predictor head activation {self.head.activation!r}; expected one of {sorted(ACTIVATIONS)}"
      )
    hidden = Decoder(self.backbone, name="backbone")(ids, compute_logits=False).hidden
    feat = last_token(hidden, lengths)
    h = nn.Dense(
      self.head.hidden,
      name="head_in",
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", "pred_hidden")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("pred_hidden",)),
    )(feat)
    h = ACTIVATIONS[self.head.activation](h)
    if self.head.center:  # never trained (train/optim.py FROZEN_PARAMS); see PredictorHeadConfig
      h = h - self.param(
        "head_center",
        nn.with_logical_partitioning(nn.initializers.zeros, ("pred_hidden",)),
        (self.head.hidden,),
      )
    scores = nn.Dense(
      self.num_layers * self.d_ff,
      name="head_out",
      kernel_init=nn.with_logical_partitioning(
        nn.initializers.normal(self.head.out_init_std), ("pred_hidden", "mlp")
      ),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
    )(h)
    scores = scores.reshape(ids.shape[0], self.num_layers, self.d_ff)
    return constrain(scores, ("act_batch", None, "act_mlp"))


def last_token(hidden: Array, lengths: Array) -> Array:
  """The predictor's feature: hidden [N, P, d] at each prompt's last valid token -> [N, d] f32."""
  last = jnp.clip(lengths.astype(jnp.int32) - 1, 0, hidden.shape[1] - 1)
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0].astype(jnp.float32)


def backbone_features(
  backbone: LlamaConfig, backbone_params: Any, ids: Array, lengths: Array
) -> Array:
  """What the head reads: the backbone's hidden at the last valid token, [N, d_pred] f32."""
  hidden = Decoder(backbone).apply({"params": backbone_params}, ids, compute_logits=False).hidden
  return last_token(hidden, lengths)


def head_in_init(rng: Array, d_pred: int, hidden: int) -> dict[str, Array]:
  """The head's first layer as `SparsityPredictor` initialises it (unboxed)."""
  return {
    "kernel": nn.initializers.lecun_normal()(rng, (d_pred, hidden)),
    "bias": jnp.zeros((hidden,), jnp.float32),
  }


def backbone_from_llm(llm_params: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
  """Predictor backbone params = the LLM's embeddings, first `num_layers` layers and final norm.

  Works on numpy or jax trees (unboxed). The LM head is dropped: the predictor reads hidden states.
  """
  n_llm = np.shape(llm_params["layers"]["input_layernorm"]["weight"])[0]
  if not 1 <= num_layers <= n_llm:
    raise ValueError(
      f"predictor num_layers={num_layers}: must be in [1, {n_llm}] "
      "(the LLM checkpoint's layer count)"
    )
  return {
    "embed_tokens": llm_params["embed_tokens"],
    "norm": llm_params["norm"],
    "layers": jax.tree.map(lambda x: x[:num_layers], llm_params["layers"]),
  }
