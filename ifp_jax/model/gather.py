"""Gather kept FFN units into a dense decoder of width k (what inference and export run).

Keeping units `idx` of layer l == columns idx of W_gate/W_up and rows idx of W_down, so the
gathered decoder with `intermediate_size = k` computes exactly the hard-masked decoder.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.model.config import LlamaConfig

Array = jax.Array


def kept_indices(mask: Array, k: int) -> Array:
  """Binary (or soft top-k) mask [..., L, F] with exactly k non-zeros per layer -> sorted
  indices [..., L, k]. Raises if a layer does not keep exactly k units."""
  mask = jnp.asarray(mask)
  counts = np.asarray(jnp.sum(mask != 0, axis=-1))
  if not (counts == k).all():
    raise ValueError(
      f"gather needs exactly k={k} kept units per layer; got counts "
      f"{sorted(set(counts.ravel().tolist()))[:8]}"
    )
  order = jnp.argsort(jnp.where(mask != 0, 0, 1), axis=-1, stable=True)
  return order[..., :k].astype(jnp.int32)


def gather_ffn(
  llm_params: dict[str, Any], indices: Array, scale: Array | None = None
) -> dict[str, Any]:
  """Dense width-k params from full params and indices [L, k].

  `scale` [L, k] (optional, e.g. soft mask values) is folded into W_down rows, so the gathered
  model equals the model masked with those values, not just the binary mask.
  """
  mlp = llm_params["layers"]["mlp"]
  n_layers, d_ff = mlp["gate_proj"]["kernel"].shape[0], mlp["gate_proj"]["kernel"].shape[-1]
  indices = jnp.asarray(indices)
  if indices.ndim != 2 or indices.shape[0] != n_layers:
    raise ValueError(f"indices must be [layers={n_layers}, k]; got {tuple(indices.shape)}")
  # Range check on concrete indices only, so the gather also runs under jit.
  if not isinstance(indices, jax.core.Tracer) and int(np.asarray(indices).max(initial=0)) >= d_ff:
    raise ValueError(f"index {int(np.asarray(indices).max())} out of range for d_ff={d_ff}")
  cols = lambda w: jnp.take_along_axis(w, indices[:, None, :], axis=2)  # noqa: E731
  down = jnp.take_along_axis(mlp["down_proj"]["kernel"], indices[:, :, None], axis=1)
  if scale is not None:
    down = down * jnp.asarray(scale, down.dtype)[:, :, None]
  new_mlp = {
    "gate_proj": {"kernel": cols(mlp["gate_proj"]["kernel"])},
    "up_proj": {"kernel": cols(mlp["up_proj"]["kernel"])},
    "down_proj": {"kernel": down},
  }
  layers = dict(llm_params["layers"], mlp=new_mlp)
  return dict(llm_params, layers=layers)


def gathered_config(cfg: LlamaConfig, k: int) -> LlamaConfig:
  if not 1 <= k <= cfg.intermediate_size:
    raise ValueError(f"k={k} must be in [1, intermediate_size={cfg.intermediate_size}]")
  return cfg.replace(intermediate_size=k)
