"""HF Llama checkpoints <-> ifp_jax decoder params (numpy trees, no JAX model code).

One table maps every HF tensor name to a path in our tree with a pair of reversible layout
transforms; per-layer HF tensors are stacked on the scanned 'layers' axis.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ifp_jax.model.config import LlamaConfig

Params = dict[str, Any]


def _rule(cfg: LlamaConfig):
  """(hf suffix, our path, hf->ours, ours->hf) for one layer or the globals."""
  d, h, kv, hd = (
    cfg.hidden_size,
    cfg.num_attention_heads,
    cfg.num_key_value_heads,
    cfg.resolved_head_dim,
  )
  heads_in = lambda n: (lambda w: w.T.reshape(d, n, hd), lambda k: k.reshape(d, n * hd).T)  # noqa: E731
  transpose = (lambda w: w.T, lambda k: k.T)
  same = (lambda w: w, lambda k: k)
  per_layer = [
    ("input_layernorm.weight", ("input_layernorm", "weight"), *same),
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "weight"), *same),
    ("self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), *heads_in(h)),
    ("self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"), *heads_in(kv)),
    ("self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"), *heads_in(kv)),
    (
      "self_attn.o_proj.weight",
      ("self_attn", "o_proj", "kernel"),
      lambda w: w.T.reshape(h, hd, d),
      lambda k: k.reshape(h * hd, d).T,
    ),
    ("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), *transpose),
    ("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), *transpose),
    ("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), *transpose),
  ]
  if cfg.qkv_bias:
    heads_bias = lambda n: (lambda b: b.reshape(n, hd), lambda k: k.reshape(n * hd))  # noqa: E731
    for name, n in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
      per_layer.append((f"self_attn.{name}.bias", ("self_attn", name, "bias"), *heads_bias(n)))
  if cfg.qk_norm:
    for name in ("q_norm", "k_norm"):
      per_layer.append((f"self_attn.{name}.weight", ("self_attn", name, "weight"), *same))
  globals_ = [
    ("model.embed_tokens.weight", ("embed_tokens", "embedding"), *same),
    ("model.norm.weight", ("norm", "weight"), *same),
  ]
  if not cfg.tie_word_embeddings:
    globals_.append(("lm_head.weight", ("lm_head", "kernel"), *transpose))
  return per_layer, globals_


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


# HF tensors that carry no weights of their own (buffers some exporters include).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_to_params(
  cfg: LlamaConfig,
  state_dict: Mapping[str, np.ndarray],
  source: str = "checkpoint",
  dtype=np.float32,
) -> Params:
  """HF-named tensors ([out, in] layout) -> our nested params
  {'embed_tokens': ..., 'layers': ...}."""
  per_layer, globals_ = _rule(cfg)
  params: Params = {}
  used = set()

  def fetch(name, expect_shape=None):
    if name not in state_dict:
      raise KeyError(f"{source}: missing weight {name!r}")
    used.add(name)
    return np.asarray(state_dict[name], dtype=dtype)

  for name, path, to_ours, _ in globals_:
    _set(params, path, to_ours(fetch(name)))
  for suffix, path, to_ours, _ in per_layer:
    stacked = []
    for i in range(cfg.num_hidden_layers):
      w = fetch(f"model.layers.{i}.{suffix}")
      try:
        stacked.append(to_ours(w))
      except ValueError as e:
        raise ValueError(
          f"{source}: weight model.layers.{i}.{suffix} has shape {w.shape}, "
          f"which does not fit the config ({e})"
        ) from None
    _set(params, ("layers",) + path, np.stack(stacked))
  if cfg.tie_word_embeddings and "lm_head.weight" in state_dict:
    used.add("lm_head.weight")  # some tied checkpoints still store the alias
  unknown = [n for n in state_dict if n not in used and not n.endswith(_IGNORED_SUFFIXES)]
  if unknown:
    raise ValueError(
      f"{source}: unexpected weights not used by a {cfg.model_type} model of this config: "
      f"{sorted(unknown)[:8]}{' ...' if len(unknown) > 8 else ''}"
    )
  _check_shapes(cfg, params, source)
  return params


def params_to_hf(
  cfg: LlamaConfig, params: Params, dtype=np.float32
) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, tensor) one at a time, so callers can stream large models to disk."""
  per_layer, globals_ = _rule(cfg)
  for name, path, _, to_hf in globals_:
    yield name, np.ascontiguousarray(to_hf(np.asarray(_get(params, path))).astype(dtype))
  for i in range(cfg.num_hidden_layers):
    for suffix, path, _, to_hf in per_layer:
      w = np.asarray(_get(params, ("layers",) + path)[i])
      yield f"model.layers.{i}.{suffix}", np.ascontiguousarray(to_hf(w).astype(dtype))


def expected_shapes(cfg: LlamaConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
  d, f, v, n = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
  h, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim
  shapes = {
    ("embed_tokens", "embedding"): (v, d),
    ("norm", "weight"): (d,),
    ("layers", "input_layernorm", "weight"): (n, d),
    ("layers", "post_attention_layernorm", "weight"): (n, d),
    ("layers", "self_attn", "q_proj", "kernel"): (n, d, h, hd),
    ("layers", "self_attn", "k_proj", "kernel"): (n, d, kv, hd),
    ("layers", "self_attn", "v_proj", "kernel"): (n, d, kv, hd),
    ("layers", "self_attn", "o_proj", "kernel"): (n, h, hd, d),
    ("layers", "mlp", "gate_proj", "kernel"): (n, d, f),
    ("layers", "mlp", "up_proj", "kernel"): (n, d, f),
    ("layers", "mlp", "down_proj", "kernel"): (n, f, d),
  }
  if cfg.qkv_bias:
    for name, heads in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
      shapes[("layers", "self_attn", name, "bias")] = (n, heads, hd)
  if cfg.qk_norm:
    for name in ("q_norm", "k_norm"):
      shapes[("layers", "self_attn", name, "weight")] = (n, hd)
  if not cfg.tie_word_embeddings:
    shapes[("lm_head", "kernel")] = (d, v)
  return shapes


def _check_shapes(cfg: LlamaConfig, params: Params, source: str) -> None:
  for path, shape in expected_shapes(cfg).items():
    got = tuple(np.shape(_get(params, path)))
    if got != shape:
      raise ValueError(f"{source}: {'/'.join(path)} has shape {got}, config expects {shape}")


# --- HF directories ---------------------------------------------------------------------------


def read_safetensors_dir(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of `model.safetensors` or a sharded `model.safetensors.index.json`."""
  from safetensors.numpy import load_file

  path = pathlib.Path(path)
  index = path / "model.safetensors.index.json"
  if index.exists():
    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
  elif (path / "model.safetensors").exists():
    files = ["model.safetensors"]
  else:
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
  out: dict[str, np.ndarray] = {}
  for name in files:
    out.update(_load_safetensors_as_f32(path / name, load_file))
  return out


def _load_safetensors_as_f32(file: pathlib.Path, load_file: Callable) -> dict[str, np.ndarray]:
  try:
    return {k: v.astype(np.float32) for k, v in load_file(str(file)).items()}
  except (TypeError, ValueError):
    # numpy has no bfloat16: go through torch for bf16 files.
    import torch
    from safetensors.torch import load_file as load_torch

    return {k: v.to(torch.float32).numpy() for k, v in load_torch(str(file)).items()}


def load_hf_dir(path: str | os.PathLike, **cfg_overrides) -> tuple[LlamaConfig, Params]:
  """Imports an HF Llama directory (config.json + safetensors) as (config, params)."""
  path = pathlib.Path(path)
  cfg_file = path / "config.json"
  if not cfg_file.exists():
    raise FileNotFoundError(f"{cfg_file}: not found (expected an HF Llama directory)")
  cfg = LlamaConfig.from_hf_dict(
    json.loads(cfg_file.read_text()), source=str(cfg_file), **cfg_overrides
  )
  return cfg, hf_to_params(cfg, read_safetensors_dir(path), source=str(path))
