"""Batched autoregressive generation with the KV cache, plus model/tokenizer loading.

Prompts of different lengths are left-padded into ids [B, P] with attention_mask [B, P]
(positions restart at 0 on each row's first real token). One jitted call prefills the prompt
into a fixed-size cache [layers, B, S, kv_heads, hd] with S = round_up(P + max_new_tokens, 64)
and decodes with `jax.lax.while_loop`, which exits early once every row hit an eos id. Rows that
finished keep producing `pad_id`. The same function serves the full model with hard FFN masks
[B, L, F] and a gathered width-k model (`ifp_jax.model.gather`) with no masks.

Recompiles happen per (config, batch, P, max_new_tokens, S, masks present or not, greedy or
sampling, top_k); `pad_prompts(..., multiple=)` rounds P to limit them.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder, KVCache

Array = jax.Array

CACHE_MULTIPLE = 64
CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
# Token strings that end a turn or a document in common Llama-family vocabularies.
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>")


@flax.struct.dataclass
class GenerateOutput:
  tokens: Array  # [B, max_new_tokens] int32; pad_id after a row's eos
  lengths: Array  # [B] int32: generated tokens per row, counting the eos that ended it


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_prompts(
  prompts: Sequence[Sequence[int]], pad_id: int = 0, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists -> (ids [B, P] int32, attention_mask [B, P] int32), P rounded up."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("generation needs at least one prompt and no empty prompt")
  width = round_up(max(len(p) for p in prompts), max(multiple, 1))
  ids = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    ids[i, width - len(p) :] = p
    mask[i, width - len(p) :] = 1
  return ids, mask


def _logits_last(cfg: LlamaConfig, params: Mapping[str, Any], hidden: Array) -> Array:
  """hidden [B, D] (final-normed) -> logits [B, vocab] f32, as Decoder's head computes them."""
  if cfg.tie_word_embeddings:
    w = params["embed_tokens"]["embedding"]
    logits = jnp.dot(hidden, w.astype(hidden.dtype).T)
  else:
    logits = jnp.dot(hidden, params["lm_head"]["kernel"].astype(hidden.dtype))
  return logits.astype(jnp.float32)


def _pick(logits: Array, rng: Array, temperature: Array, greedy: bool, top_k: int) -> Array:
  """logits [B, V] -> token ids [B] int32 (argmax, or a sample at `temperature` from top-k)."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _generate(
  cfg: LlamaConfig,
  params,
  ids,
  attention_mask,
  ffn_masks,
  eos_ids,
  pad_id,
  rng,
  temperature,
  *,
  max_new_tokens: int,
  cache_len: int,
  greedy: bool,
  top_k: int,
) -> GenerateOutput:
  b, p = ids.shape
  model = Decoder(cfg)
  attention_mask = attention_mask.astype(jnp.int32)
  positions = jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0)
  n_real = jnp.sum(attention_mask, axis=1)  # [B]: position of the first generated token
  out = model.apply(
    {"params": params},
    ids,
    ffn_masks=ffn_masks,
    positions=positions,
    attention_mask=attention_mask,
    cache=KVCache.init(cfg, b, cache_len),
    empty_cache=True,
    compute_logits=False,
  )
  logits = _logits_last(cfg, params, out.hidden[:, -1])
  first = _pick(logits, jax.random.fold_in(rng, 0), temperature, greedy, top_k)
  done = jnp.isin(first, eos_ids)
  tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
  ones = jnp.ones((b, 1), jnp.int32)

  def cond(state):
    step, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, cache, tokens, done, lengths = state
    prev = tokens[:, step - 1]
    out = model.apply(
      {"params": params},
      prev[:, None],
      ffn_masks=ffn_masks,
      positions=(n_real + step - 1)[:, None],
      attention_mask=ones,
      cache=cache,
      compute_logits=False,
    )
    logits = _logits_last(cfg, params, out.hidden[:, 0])
    tok = _pick(logits, jax.random.fold_in(rng, step), temperature, greedy, top_k)
    tok = jnp.where(done, pad_id, tok)
    lengths = lengths + (~done).astype(jnp.int32)
    done = done | jnp.isin(tok, eos_ids)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, tok[:, None], step, axis=1)
    return step + 1, out.cache, tokens, done, lengths

  state = (jnp.ones((), jnp.int32), out.cache, tokens, done, jnp.ones((b,), jnp.int32))
  _, _, tokens, _, lengths = jax.lax.while_loop(cond, body, state)
  return GenerateOutput(tokens=tokens, lengths=lengths)


@functools.lru_cache(maxsize=16)
def _compiled(cfg: LlamaConfig):
  """One jitted generate per config (configs are frozen and hashable: the cache key)."""
  return jax.jit(
    functools.partial(_generate, cfg),
    static_argnames=("max_new_tokens", "cache_len", "greedy", "top_k"),
  )


def generate(
  cfg: LlamaConfig,
  params: Mapping[str, Any],
  input_ids: Array,
  attention_mask: Array | None = None,
  *,
  max_new_tokens: int,
  ffn_masks: Array | None = None,
  eos_ids: Sequence[int] = (),
  pad_id: int = 0,
  temperature: float = 0.0,
  top_k: int = 0,
  rng: Array | None = None,
  cache_multiple: int = CACHE_MULTIPLE,
) -> GenerateOutput:
  """Greedy (temperature 0) or sampled continuation of left-padded prompts.

  Args:
    cfg, params: the decoder (full, or gathered to width k with `gather.gathered_config`).
    input_ids: [B, P] int, left-padded; attention_mask: [B, P] (1 = real token), default ones.
    max_new_tokens: tokens generated per row (static).
    ffn_masks: None, [L, F] (shared) or [B, L, F] FFN masks for the full model.
    eos_ids: ids that end a row; the eos is counted in `lengths`, pad_id follows it.
    temperature, top_k, rng: sampling controls; temperature > 0 needs an explicit rng.
  Returns:
    GenerateOutput(tokens [B, max_new_tokens] int32, lengths [B] int32).
  """
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
  if temperature < 0:
    raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
  greedy = temperature == 0
  if not greedy and rng is None:
    raise ValueError("sampling (temperature > 0) needs an explicit rng")
  if not 0 <= top_k <= cfg.vocab_size:
    raise ValueError(f"top_k={top_k} must be in [0, vocab_size={cfg.vocab_size}]")
  input_ids = jnp.asarray(input_ids, jnp.int32)
  b, p = input_ids.shape
  if attention_mask is None:
    attention_mask = jnp.ones((b, p), jnp.int32)
  attention_mask = jnp.asarray(attention_mask, jnp.int32)
  if attention_mask.shape != (b, p):
    raise ValueError(f"attention_mask {attention_mask.shape} != input_ids {(b, p)}")
  if ffn_masks is not None:
    ffn_masks = jnp.asarray(ffn_masks)
    if ffn_masks.ndim == 2:
      ffn_masks = jnp.broadcast_to(ffn_masks, (b,) + ffn_masks.shape)
  eos = list(eos_ids)
  eos = jnp.asarray(eos + [-1] * (round_up(len(eos) + 1, 8) - len(eos)), jnp.int32)  # fixed shape
  cache_len = round_up(p + max_new_tokens, cache_multiple)
  fn = _compiled(cfg)
  return fn(
    params,
    input_ids,
    attention_mask,
    ffn_masks,
    eos,
    jnp.int32(pad_id),
    rng if rng is not None else jax.random.key(0),
    jnp.float32(max(temperature, 1e-6)),
    max_new_tokens=max_new_tokens,
    cache_len=cache_len,
    greedy=greedy,
    top_k=top_k,
  )


def trim(tokens: Array, lengths: Array) -> list[list[int]]:
  """GenerateOutput fields -> one Python list per row (eos kept, padding dropped)."""
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return [tokens[i, : lengths[i]].tolist() for i in range(tokens.shape[0])]


# --- models, tokenizers, chat prompts (I/O) ---------------------------------------------------


def load_model(spec: str) -> tuple[LlamaConfig, dict[str, Any], Any]:
  """A dense model spec (`ifp_jax.io.models`: "smollm2", "gguf:PATH", "hf:PATH" or an HF
  directory) -> (cfg, params on device, `tokenizers.Tokenizer`)."""
  from ifp_jax.io.models import parse_spec, resolve_model

  if parse_spec(spec)[0] == "workdir":
    raise ValueError(f"model={spec!r} is a training run: pass it as --workdir (pruned inference)")
  model = resolve_model(spec)
  cfg, params, path = model.cfg, model.params, model.path
  if model.kind in ("smollm2", "gguf"):
    from ifp_jax.io import gguf as gguf_io

    tokenizer = gguf_io.tokenizer_from_gguf(path)
  else:
    from tokenizers import Tokenizer

    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
      raise FileNotFoundError(
        f"{tok_file}: not found (the model directory needs an HF tokenizer.json)"
      )
    tokenizer = Tokenizer.from_file(str(tok_file))
  return cfg, jax.device_put(params), tokenizer


def chat_template(spec: str) -> str | None:
  """The model's own Jinja chat template (GGUF metadata or tokenizer_config.json), or None."""
  if spec == "smollm2" or spec.startswith("gguf:"):
    from ifp_jax.io import gguf as gguf_io

    path = gguf_io.find_smollm2_gguf() if spec == "smollm2" else pathlib.Path(spec[5:])
    return gguf_io.gguf_chat_template(path)
  cfg_file = pathlib.Path(spec.removeprefix("hf:")) / "tokenizer_config.json"
  if cfg_file.is_file():
    template = json.loads(cfg_file.read_text()).get("chat_template")
    if isinstance(template, str):
      return template
  jinja_file = cfg_file.parent / "chat_template.jinja"
  return jinja_file.read_text() if jinja_file.is_file() else None


def chat_prompt(prompt: str, template: str | None = None) -> str:
  """One user turn + the assistant generation prompt: the Jinja template if given, else
  ChatML (`<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n`)."""
  if template is None:
    return CHATML.format(prompt=prompt)
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message: str):
    raise ValueError(f"chat template: {message}")

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals["raise_exception"] = raise_exception
  return env.from_string(template).render(
    messages=[{"role": "user", "content": prompt}], add_generation_prompt=True
  )


def stop_ids(tokenizer) -> list[int]:
  """Ids of the usual end-of-turn / end-of-text tokens present in a `tokenizers.Tokenizer`."""
  found = (tokenizer.token_to_id(t) for t in STOP_TOKENS)
  return sorted({i for i in found if i is not None})
