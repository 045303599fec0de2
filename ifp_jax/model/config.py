"""Architecture configs for the masked decoder and the predictor head.

`LlamaConfig` mirrors the fields of transformers' `LlamaConfig` that change the computation;
`from_hf_dict` rejects any field value we do not implement, so an imported checkpoint either
computes exactly what transformers computes or fails loudly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def to_dtype(name: str) -> Any:
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Llama-family decoder shape and numerics (HF field names)."""

  vocab_size: int = 256
  hidden_size: int = 64
  intermediate_size: int = 192
  num_hidden_layers: int = 2
  num_attention_heads: int = 4
  num_key_value_heads: int = 2
  head_dim: int | None = None  # None -> hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  # None, or HF's Llama-3 dict: {"rope_type": "llama3", "factor", "low_freq_factor",
  # "high_freq_factor", "original_max_position_embeddings"}.
  rope_scaling: Mapping[str, Any] | None = None
  max_position_embeddings: int = 2048
  tie_word_embeddings: bool = True
  initializer_range: float = 0.02
  # Numerics: parameters are stored in param_dtype, matmuls run in dtype.
  dtype: str = "float32"
  param_dtype: str = "float32"
  # Rematerialise each layer in the backward pass: "none" | "full" | "dots" (save matmuls).
  remat: str = "none"
  # nn.scan unroll factor over layers. XLA:CPU with several (fake) devices can deadlock on
  # collectives inside a loop (rendezvous keys repeat across iterations): CPU meshes use
  # scan_unroll = num_hidden_layers (see ifp_jax.train.sharding.cpu_safe_unroll).
  scan_unroll: int = 1
  # Attention implementation (ifp_jax.model.attention): "auto" (per backend) | "xla" |
  # "dot_product". Changes speed, not the function; never written to an HF config.json.
  attention_impl: str = "auto"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads and self.head_dim is None:
      raise ValueError(
        f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
        f"{self.num_attention_heads}; set head_dim explicitly"
      )
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(
        f"num_attention_heads={self.num_attention_heads} must be a multiple of "
        f"num_key_value_heads={self.num_key_value_heads}"
      )
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat={self.remat!r}; expected 'none', 'full' or 'dots'")
    if self.attention_impl not in ("auto", "xla", "dot_product"):
      raise ValueError(
        f"attention_impl={self.attention_impl!r}; expected 'auto', 'xla' or 'dot_product'"
      )
    to_dtype(self.dtype)
    to_dtype(self.param_dtype)
    if self.rope_scaling is not None:
      kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
      if kind not in ("llama3", "default"):
        raise ValueError(f"rope_scaling type {kind!r} is not supported (only 'llama3')")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
    return d

  # --- HF interop -----------------------------------------------------------------------------
  _HF_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "initializer_range",
  )
  # Fields whose value must be exactly this for our computation to match transformers'.
  _HF_REQUIRED = {
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
  }

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides):
    """Builds a config from an HF `config.json` dict; unsupported values raise ValueError."""
    model_type = hf.get("model_type", "llama")
    if model_type != "llama":
      raise ValueError(f"{source}: model_type={model_type!r} is not supported (only 'llama')")
    for key, want in cls._HF_REQUIRED.items():
      if key in hf and hf[key] is not None and hf[key] != want:
        raise ValueError(f"{source}: unsupported {key}={hf[key]!r} (ifp_jax implements {want!r})")
    if hf.get("attention_dropout", 0.0):
      raise ValueError(f"{source}: attention_dropout={hf['attention_dropout']} is not supported")
    missing = [
      k
      for k in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
      )
      if k not in hf
    ]
    if missing:
      raise ValueError(f"{source}: missing required fields {missing}")
    kw = {k: hf[k] for k in cls._HF_FIELDS if k in hf and hf[k] is not None}
    kw.setdefault("num_key_value_heads", hf["num_attention_heads"])
    rope_params = hf.get("rope_parameters")  # transformers >= 5 folds theta/scaling in here
    if rope_params:
      if "rope_theta" in rope_params:
        kw["rope_theta"] = rope_params["rope_theta"]
      if rope_params.get("rope_type", "default") != "default":
        kw["rope_scaling"] = dict(rope_params)
    if (
      kw.get("rope_scaling")
      and kw["rope_scaling"].get("rope_type", kw["rope_scaling"].get("type")) == "default"
    ):
      kw["rope_scaling"] = None
    kw.update(overrides)
    return cls(**kw)

  def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
    """An HF `config.json` dict that transformers' LlamaForCausalLM loads."""
    hf = {k: getattr(self, k) for k in self._HF_FIELDS}
    hf["head_dim"] = self.resolved_head_dim
    hf["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
    hf.update(self._HF_REQUIRED)
    hf.update(
      model_type="llama",
      architectures=["LlamaForCausalLM"],
      attention_dropout=0.0,
      use_cache=True,
      torch_dtype=torch_dtype,
    )
    return hf


@dataclasses.dataclass(frozen=True)
class PredictorHeadConfig:
  """Head on the predictor backbone: d_pred -> hidden -> num_layers * d_ff scores."""

  hidden: int = 128
  activation: str = "gelu"  # gelu | relu | silu | tanh | identity
  # Std of the final layer's init; small keeps initial scores near-uniform (soft top-k ~ k/d_ff).
  out_init_std: float = 0.02
