"""Where the predictor's backbone and tokenizer come from (schema: train/config.py).

  model.predictor_init_from ''    shares the LLM's tokenizer; the backbone is the LLM's first
                                  `predictor_init_layers` layers (> 0), or the `model.predictor`
                                  architecture, randomly initialised (0)
  model.predictor_init_from SPEC  its own model (an ifp_jax/io/models.py spec: smollm2, gguf:,
                                  hf:, a WORKDIR): the first `predictor_init_layers` layers of
                                  SPEC (0 = all), with its config and weights
  data.predictor_tokenizer        '' = derived: SPEC's own tokenizer, else data.tokenizer

A predictor tokenizer spec equal to data.tokenizer is the shared tokenizer (the default): the
batches are then those of a run without these fields, byte for byte.
"""

from __future__ import annotations

from typing import Any

from ifp_jax.data.tokenization import Tokenizer, load_tokenizer
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.ifp_model import mask_kind
from ifp_jax.model.predictor import backbone_from_llm


def _fields(config) -> tuple[str, str, int]:
  """(predictor_init_from, data.predictor_tokenizer, predictor_init_layers); configs written
  before the first two existed have neither."""
  m = config.model
  return (
    str(m.get("predictor_init_from", "") or ""),
    str(config.data.get("predictor_tokenizer", "") or ""),
    int(m.predictor_init_layers),
  )


def check(config) -> None:
  """Combinations that cannot work, named by field (config only: nothing is loaded)."""
  spec, tok, layers = _fields(config)
  kind = config.model.mask_kind
  if not mask_kind(kind).uses_predictor:
    for field, value in (("model.predictor_init_from", spec), ("data.predictor_tokenizer", tok)):
      if value:
        raise ValueError(
          f"{field}={value!r} needs a predictor, but model.mask_kind={kind!r} has none "
          "(use soft_topk or hard_concrete, or leave the field empty)"
        )
  if layers < 0:
    raise ValueError(f"model.predictor_init_layers={layers} must be >= 0")
  if not spec and layers > 0 and tok and tok != config.data.tokenizer:
    raise ValueError(
      f"data.predictor_tokenizer={tok!r} differs from data.tokenizer="
      f"{config.data.tokenizer!r}, but the predictor backbone is the LLM's first "
      f"model.predictor_init_layers={layers} layers, which read the LLM's tokens; set "
      "model.predictor_init_from to a model of that tokenizer, or model.predictor_init_layers=0 "
      "for a random backbone"
    )


def tokenizer_spec(config) -> str:
  """The predictor's tokenizer spec (module docstring); data.tokenizer when it shares it."""
  from ifp_jax.io.models import tokenizer_spec_of

  check(config)
  spec, tok, _ = _fields(config)
  if tok:
    return tok
  if spec:
    own = tokenizer_spec_of(spec, flag="model.predictor_init_from")
    if own is None:
      raise ValueError(
        f"model.predictor_init_from={spec!r} ships no tokenizer (tokenizer.json): set "
        "data.predictor_tokenizer"
      )
    return own
  return str(config.data.tokenizer)


def load_predictor_tokenizer(config, tokenizer: Tokenizer) -> Tokenizer:
  """The predictor's tokenizer: `tokenizer` itself (the LLM's) when shared."""
  spec = tokenizer_spec(config)
  return tokenizer if spec == config.data.tokenizer else load_tokenizer(spec)


def backbone(
  config,
  llm: LlamaConfig,
  llm_params: Any | None,
  tokenizer: Tokenizer,
  predictor_tokenizer: Tokenizer,
) -> tuple[LlamaConfig, Any | None]:
  """(backbone config, pretrained backbone params or None) per the module docstring."""
  from ifp_jax.io.models import resolve_model

  check(config)
  spec, _, layers = _fields(config)
  where = "the LLM"
  if spec:
    model = resolve_model(spec, flag="model.predictor_init_from")
    where = f"model.predictor_init_from={spec!r}"
    n = model.cfg.num_hidden_layers
    if layers > n:
      raise ValueError(f"model.predictor_init_layers={layers} exceeds the {n} layers of {where}")
    layers = layers or n
    cfg, params = (
      model.cfg.replace(num_hidden_layers=layers),
      backbone_from_llm(model.params, layers),
    )
  elif layers > 0:
    if layers > llm.num_hidden_layers:
      raise ValueError(
        f"model.predictor_init_layers={layers} exceeds the LLM's {llm.num_hidden_layers} layers"
      )
    cfg = llm.replace(num_hidden_layers=layers)
    params = None if llm_params is None else backbone_from_llm(llm_params, layers)
  else:  # random `model.predictor` architecture; its vocab is its tokenizer's
    from ifp_jax.train.config import llama_from_fields

    own = predictor_tokenizer is not tokenizer
    vocab = -(-predictor_tokenizer.vocab_size // 128) * 128 if own else llm.vocab_size
    cfg, params = llama_from_fields(config.model.predictor, vocab_size=vocab), None
    where = "model.predictor"
  if predictor_tokenizer.vocab_size > cfg.vocab_size:
    raise ValueError(
      f"the predictor's tokenizer {predictor_tokenizer.name!r} has "
      f"{predictor_tokenizer.vocab_size} ids, but the predictor backbone ({where}) has "
      f"vocab_size={cfg.vocab_size}: set data.predictor_tokenizer to that model's tokenizer"
    )
  return cfg, params
