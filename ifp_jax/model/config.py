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
# HF model_type -> the transformers class an export declares.
MODEL_TYPES = {
  "llama": "LlamaForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "qwen3": "Qwen3ForCausalLM",
}
# HF config fields of mixture-of-experts models (rejected when set).
_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")


def to_dtype(name: str) -> Any:
  try:
    return _DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """HF's Llama-3 `rope_scaling` (a frozen record, so configs stay hashable jit-cache keys)."""

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int
  rope_type: str = "llama3"

  def __post_init__(self):
    if self.rope_type != "llama3":
      raise ValueError(f"rope_scaling rope_type={self.rope_type!r}: only 'llama3' is supported")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "rope_scaling") -> "RopeScaling | None":
    """HF dict (`rope_scaling`, or transformers 5's `rope_parameters`) -> RopeScaling or None."""
    kind = d.get("rope_type", d.get("type", "default"))
    if kind == "default":
      return None
    if kind != "llama3":
      raise ValueError(f"{source}: rope_type={kind!r} is not supported (only 'llama3')")
    names = [f.name for f in dataclasses.fields(cls) if f.name != "rope_type"]
    missing = [n for n in names if d.get(n) is None]
    if missing:
      raise ValueError(f"{source}: llama3 rope scaling needs {missing}")
    return cls(**{n: d[n] for n in names})

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Llama-family decoder shape and numerics (HF field names).

  `model_type` selects the HF architecture behind the same decoder: llama; qwen2 (q/k/v
  projection biases); qwen3 (per-head RMSNorm of q and k before rope).
  """

  vocab_size: int = 256
  hidden_size: int = 64
  intermediate_size: int = 192
  num_hidden_layers: int = 2
  num_attention_heads: int = 4
  num_key_value_heads: int = 2
  head_dim: int | None = None  # None -> hidden_size // num_attention_heads
  rms_norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  # None or RopeScaling; an HF-style dict is accepted and frozen in __post_init__.
  rope_scaling: RopeScaling | None = None
  model_type: str = "llama"  # llama | qwen2 | qwen3
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
    if isinstance(self.rope_scaling, Mapping):  # frozen, so the config stays hashable
      object.__setattr__(self, "rope_scaling", RopeScaling.from_dict(self.rope_scaling))
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
    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"model_type={self.model_type!r}; expected one of {sorted(MODEL_TYPES)}")
    if self.remat not in ("none", "full", "dots"):
      raise ValueError(f"remat={self.remat!r}; expected 'none', 'full' or 'dots'")
    if self.attention_impl not in ("auto", "xla", "dot_product"):
      raise ValueError(
        f"attention_impl={self.attention_impl!r}; expected 'auto', 'xla' or 'dot_product'"
      )
    to_dtype(self.dtype)
    to_dtype(self.param_dtype)

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  @property
  def qkv_bias(self) -> bool:
    """q/k/v projections carry biases (Qwen2 / Qwen2.5)."""
    return self.model_type == "qwen2"

  @property
  def qk_norm(self) -> bool:
    """Per-head RMSNorm of q and k before rope (Qwen3)."""
    return self.model_type == "qwen3"

  def replace(self, **kw) -> "LlamaConfig":
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict[str, Any]:
    """JSON-serialisable fields; `from_dict` inverts it."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "LlamaConfig":
    """Inverse of `to_dict` (also reads older dicts: fields added since take their defaults)."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"{source}: unknown LlamaConfig fields {unknown}")
    return cls(**d)

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

  @staticmethod
  def _hf_required(model_type: str) -> dict[str, Any]:
    if model_type == "llama":
      return dict(LlamaConfig._HF_REQUIRED)
    # Qwen2's q/k/v biases are not a config field (always on); Qwen3 has attention_bias.
    req: dict[str, Any] = {"hidden_act": "silu", "use_sliding_window": False}
    if model_type == "qwen3":
      req["attention_bias"] = False
    return req

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], source: str = "config.json", **overrides):
    """Builds a config from an HF `config.json` dict; unsupported values raise ValueError."""
    model_type = hf.get("model_type", "llama")
    if model_type not in MODEL_TYPES:
      raise ValueError(
        f"{source}: model_type={model_type!r} is not supported (supported: {sorted(MODEL_TYPES)})"
      )
    for key, want in cls._hf_required(model_type).items():
      if key in hf and hf[key] is not None and hf[key] != want:
        raise ValueError(f"{source}: unsupported {key}={hf[key]!r} (ifp_jax implements {want!r})")
    for key in _MOE_FIELDS:
      if hf.get(key):
        raise ValueError(f"{source}: {key}={hf[key]!r}: mixture-of-experts is not supported")
    layer_types = hf.get("layer_types") or []
    if any(t != "full_attention" for t in layer_types):
      raise ValueError(
        f"{source}: layer_types={sorted(set(layer_types))}: only full attention is supported "
        "(sliding-window layers are not)"
      )
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
    kw["model_type"] = model_type
    rope_params = hf.get("rope_parameters")  # transformers >= 5 folds theta/scaling in here
    if rope_params:
      if "rope_theta" in rope_params:
        kw["rope_theta"] = rope_params["rope_theta"]
      kw["rope_scaling"] = rope_params
    if kw.get("rope_scaling") is not None:
      kw["rope_scaling"] = RopeScaling.from_dict(kw["rope_scaling"], f"{source}: rope_scaling")
    kw.update(overrides)
    return cls(**kw)

  def to_hf_dict(self, torch_dtype: str = "float32") -> dict[str, Any]:
    """An HF `config.json` dict that transformers loads as the same architecture."""
    hf = {k: getattr(self, k) for k in self._HF_FIELDS}
    hf["head_dim"] = self.resolved_head_dim
    hf["rope_scaling"] = self.rope_scaling.to_dict() if self.rope_scaling else None
    hf.update(self._hf_required(self.model_type))
    if self.model_type != "llama":
      hf.update(sliding_window=None, max_window_layers=self.num_hidden_layers)
    hf.update(
      model_type=self.model_type,
      architectures=[MODEL_TYPES[self.model_type]],
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
  # Centre the output layer's input: scores = (act(head_in(feat)) - head_center) @ W + b, with
  # `head_center` a parameter the optimizer never moves (set by train.warm_start='griffin' to the
  # mean activation). The function class is the same; what changes is training: the gradient of
  # W then carries only the per-prompt part, and what every prompt shares trains through b alone
  # (uncentred, W's common input acts as a second, faster bias and washes out per-prompt masks).
  center: bool = False
