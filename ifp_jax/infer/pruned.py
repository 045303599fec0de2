"""Pruned inference: predictor -> kept units -> dense width-k weights -> KV-cached decoding.

Modes of `PrunedRunner`:
  full       the LLM with every FFN unit (no predictor, no mask);
  per_input  the predictor reads each prompt's instruction (default: the prompt itself);
  per_task   the predictor reads a task instruction once; its kept units are cached and
             reused for every later prompt of that task.
  griffin    training-free (ifp_jax/infer/griffin.py): the full LLM prefills the prompt (or the
             given instruction, templated like the prompt) and each layer keeps its k units of
             largest normalised SwiGLU activation norm; the predictor is not used, so a dense
             run (mask_kind 'none') works too, at its config's model.k.

Rows whose kept units are identical share one gathered model and run as one batch. Rows with
different units run in one batch too: the gathered FFN weights get a leading row axis and the
whole generation is `vmap`ped over rows, so each row's FFN is a batched width-k matmul. Either
way only k units per layer are ever computed - the point of IFPruning.

Stop strings are applied to the decoded text (generation itself stops at end-of-turn / end-of-
text tokens), so a stop string costs the tokens generated after it, never correctness.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.infer import generate as gen
from ifp_jax.infer import griffin
from ifp_jax.infer import instruction_masks as instruct_masks
from ifp_jax.infer.run_loader import LoadedRun
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder
from ifp_jax.model.gather import gather_ffn, gathered_config

log = logging.getLogger(__name__)

MODES = ("full", "per_input", "per_task", "griffin")
_PAD_MULTIPLE = 16  # prompt/sequence lengths are rounded up to this to limit recompiles


def _mlp_axes(params: dict[str, Any]) -> dict[str, Any]:
  """vmap in_axes for an LLM param tree whose FFN kernels carry a leading row axis."""
  axes = jax.tree.map(lambda _: None, params)
  axes["layers"] = dict(axes["layers"], mlp=jax.tree.map(lambda _: 0, params["layers"]["mlp"]))
  return axes


@jax.jit
def _gather_rows(llm_params: dict[str, Any], indices: jax.Array) -> dict[str, Any]:
  """indices [R, L, k] -> LLM params with FFN kernels [R, L, ...] (other leaves shared)."""
  mlp = jax.vmap(lambda idx: gather_ffn(llm_params, idx)["layers"]["mlp"])(indices)
  return dict(llm_params, layers=dict(llm_params["layers"], mlp=mlp))


@functools.lru_cache(maxsize=16)
def _rowwise_generate(cfg: LlamaConfig):

  def fn(
    params, ids, attn, eos, pad_id, rngs, temperature, *, max_new_tokens, cache_len, greedy, top_k
  ):
    def one(p, i, a, r):
      out = gen._generate(
        cfg,
        p,
        i[None],
        a[None],
        None,
        eos,
        pad_id,
        r,
        temperature,
        max_new_tokens=max_new_tokens,
        cache_len=cache_len,
        greedy=greedy,
        top_k=top_k,
      )
      return out.tokens[0], out.lengths[0]

    tokens, lengths = jax.vmap(one, in_axes=(_mlp_axes(params), 0, 0, 0))(params, ids, attn, rngs)
    return gen.GenerateOutput(tokens=tokens, lengths=lengths)

  return jax.jit(fn, static_argnames=("max_new_tokens", "cache_len", "greedy", "top_k"))


@functools.lru_cache(maxsize=16)
def _token_logprobs(cfg: LlamaConfig, rowwise: bool):
  """(params, ids [B, T]) -> log p(ids[:, t+1] | ids[:, :t+1]) [B, T-1] (f32)."""

  def one(params, ids):
    logits = Decoder(cfg).apply({"params": params}, ids).logits[:, :-1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]

  if not rowwise:
    return jax.jit(one)

  def fn(params, ids):
    return jax.vmap(lambda p, i: one(p, i[None])[0], in_axes=(_mlp_axes(params), 0))(params, ids)

  return jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _choice_logprobs(cfg: LlamaConfig, rowwise: bool):
  """(params, ids [B, T], last [B], choices [C]) -> log p(choice | ids[b, :last[b] + 1]) [B, C]
  (f32): one forward pass per row, the vocabulary head only at each row's last context token."""

  def one(params, ids, last, choices):
    hidden = Decoder(cfg).apply({"params": params}, ids, compute_logits=False).hidden
    h = jnp.take_along_axis(hidden, last[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    logp = jax.nn.log_softmax(gen._logits_last(cfg, params, h), axis=-1)
    return logp[:, choices]

  if not rowwise:
    return jax.jit(one)

  def fn(params, ids, last, choices):
    return jax.vmap(
      lambda p, i, n: one(p, i[None], n[None], choices)[0], in_axes=(_mlp_axes(params), 0, 0)
    )(params, ids, last)

  return jax.jit(fn)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
  """`text` up to (excluding) the earliest stop string."""
  cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
  return text[:cut]


class PrunedRunner:
  """Generation and log-likelihoods of one trained run under one mode (see module doc)."""

  def __init__(self, run: LoadedRun, mode: str = "per_input"):
    if mode not in MODES:
      raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if mode not in ("full", "griffin") and not run.ifp.has_masks:
      raise ValueError(
        f"{run.workdir} is a dense run (mask_kind='none'): it has no masks of its own, so only"
        f" modes 'full' and 'griffin' apply, not {mode!r}"
      )
    if mode == "griffin" and not 0 < run.ifp.k < run.ifp.llm.intermediate_size:
      # A dense run's k is its config's model.k, which nothing else checked.
      raise ValueError(
        f"{run.workdir}: GRIFFIN keeps model.k = {run.ifp.k} units per layer, which must be in"
        f" (0, {run.ifp.llm.intermediate_size})"
      )
    self.run, self.mode = run, mode
    self.tokenizer = run.tokenizer
    self.max_prompt_len = instruct_masks.max_prompt_len(run.meta)
    self.llm_params = run.params["llm"]
    self.cfg_full = run.ifp.llm
    self.cfg_k = self.cfg_full if mode == "full" else gathered_config(run.ifp.llm, run.ifp.k)
    self._kept_cache: dict[str, np.ndarray] = {}
    self.predictor_calls = 0  # instructions the predictor has read (tests check per-task reuse)
    self._griffin_cache: dict[tuple[str, bool], np.ndarray] = {}
    self.griffin_calls = 0  # prompts GRIFFIN has prefilled

  # --- masks ---------------------------------------------------------------------------------
  def kept(self, instructions: Sequence[str], chat: bool = True) -> np.ndarray:
    """Kept-unit indices [B, L, k] per instruction (cached by instruction text). `chat` only
    matters for 'griffin', which prefills the text as the model sees a prompt."""
    if self.mode == "full":
      raise ValueError("mode 'full' keeps every unit: there are no kept-unit indices")
    if self.mode == "griffin":
      return self._griffin_kept(instructions, chat)
    todo = list(dict.fromkeys(t for t in instructions if t not in self._kept_cache))
    if todo:
      idx = instruct_masks.kept_units(
        self.run.ifp, self.run.params, self.run.predictor_tokenizer, todo, self.max_prompt_len
      )
      self.predictor_calls += len(todo)
      self._kept_cache.update(zip(todo, idx))
    return np.stack([self._kept_cache[t] for t in instructions])

  def _griffin_kept(self, texts: Sequence[str], chat: bool) -> np.ndarray:
    todo = list(dict.fromkeys(t for t in texts if (t, chat) not in self._griffin_cache))
    if todo:
      rows = [self.encode_prompt(t, chat) for t in todo]
      idx = griffin.griffin_units(
        self.cfg_full, self.llm_params, rows, self.run.ifp.k, pad_id=self.tokenizer.pad_id
      )
      self.griffin_calls += len(todo)
      self._griffin_cache.update({(t, chat): i for t, i in zip(todo, idx)})
    return np.stack([self._griffin_cache[(t, chat)] for t in texts])

  def _instructions(self, prompts: Sequence[str], instructions: Sequence[str] | None) -> list[str]:
    if instructions is None:
      if self.mode == "per_task":
        raise ValueError("mode 'per_task' needs the task instruction(s) (instructions=...)")
      return list(prompts)
    if isinstance(instructions, str):
      return [instructions] * len(prompts)
    if len(instructions) != len(prompts):
      raise ValueError(f"{len(instructions)} instructions for {len(prompts)} prompts")
    return list(instructions)

  def _params_for(self, instructions: list[str] | None, chat: bool = True) -> tuple[Any, bool]:
    """(LLM params for these rows, rowwise?): full, one shared gathered model, or per row."""
    if self.mode == "full":
      return self.llm_params, False
    idx = self.kept(instructions, chat)
    if all(np.array_equal(idx[0], i) for i in idx[1:]):
      return gather_ffn(self.llm_params, idx[0]), False
    return _gather_rows(self.llm_params, jnp.asarray(idx)), True

  # --- generation ----------------------------------------------------------------------------
  def encode_prompt(self, prompt: str, chat: bool) -> list[int]:
    if chat:
      prompt = self.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
      )
    ids = self.tokenizer.encode(prompt)
    if not ids:
      raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return ids

  def generate_ids(
    self,
    prompts: Sequence[str],
    *,
    instructions=None,
    max_new_tokens=64,
    chat=True,
    temperature=0.0,
    top_k=0,
    seed=0,
  ) -> list[list[int]]:
    """Generated token ids per prompt (the stop token kept)."""
    prompts = list(prompts)
    if not prompts:
      return []
    instr = None if self.mode == "full" else self._instructions(prompts, instructions)
    params, rowwise = self._params_for(instr, chat)
    ids, attn = gen.pad_prompts(
      [self.encode_prompt(p, chat) for p in prompts],
      pad_id=self.tokenizer.pad_id,
      multiple=_PAD_MULTIPLE,
    )
    if ids.shape[1] + max_new_tokens > self.cfg_full.max_position_embeddings:
      raise ValueError(
        f"prompt ({ids.shape[1]} tokens, padded) + max_new_tokens="
        f"{max_new_tokens} exceeds max_position_embeddings="
        f"{self.cfg_full.max_position_embeddings}"
      )
    stops = list(self.tokenizer.stop_ids)
    rng = jax.random.key(seed)
    if not rowwise:
      out = gen.generate(
        self.cfg_k,
        params,
        ids,
        attn,
        max_new_tokens=max_new_tokens,
        eos_ids=stops,
        pad_id=self.tokenizer.pad_id,
        temperature=temperature,
        top_k=top_k,
        rng=rng,
      )
    else:
      if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
      eos = jnp.asarray(stops + [-1] * (gen.round_up(len(stops) + 1, 8) - len(stops)), jnp.int32)
      out = _rowwise_generate(self.cfg_k)(
        params,
        jnp.asarray(ids),
        jnp.asarray(attn),
        eos,
        jnp.int32(self.tokenizer.pad_id),
        jax.random.split(rng, len(prompts)),
        jnp.float32(max(temperature, 1e-6)),
        max_new_tokens=max_new_tokens,
        cache_len=gen.round_up(ids.shape[1] + max_new_tokens, gen.CACHE_MULTIPLE),
        greedy=temperature == 0,
        top_k=top_k,
      )
    return gen.trim(out.tokens, out.lengths)

  def generate(
    self,
    prompts: Sequence[str],
    *,
    instructions=None,
    max_new_tokens: int = 64,
    chat: bool = True,
    stop: Sequence[str] = (),
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
  ) -> list[str]:
    """Continuations (special tokens removed, cut at the first stop string)."""
    stop_set = set(self.tokenizer.stop_ids)
    rows = self.generate_ids(
      prompts,
      instructions=instructions,
      max_new_tokens=max_new_tokens,
      chat=chat,
      temperature=temperature,
      top_k=top_k,
      seed=seed,
    )
    return [
      cut_at_stop(self.tokenizer.decode([t for t in r if t not in stop_set]), stop) for r in rows
    ]

  # --- scoring -------------------------------------------------------------------------------
  def loglikelihood(
    self,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    instructions=None,
    chat: bool = False,
    batch_size: int = 16,
  ) -> list[float]:
    """sum log p(continuation | context) per row, under each row's pruned model.

    With `chat`, the context is one user turn and the continuation the assistant's reply.
    """
    if len(contexts) != len(continuations):
      raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    instr = None if self.mode == "full" else self._instructions(contexts, instructions)
    out: list[float] = []
    for lo in range(0, len(contexts), batch_size):
      hi = min(lo + batch_size, len(contexts))
      out += self._loglik_batch(
        contexts[lo:hi], continuations[lo:hi], None if instr is None else instr[lo:hi], chat
      )
    return out

  def _loglik_batch(self, contexts, continuations, instr, chat) -> list[float]:
    rows, starts = [], []
    for ctx, cont in zip(contexts, continuations):
      c = self.encode_prompt(ctx, chat) if chat else self.tokenizer.encode(ctx)
      if not c:  # an empty context conditions on the start-of-document token
        c = [self.tokenizer.bos_id]
      x = self.tokenizer.encode(cont)
      if not x:
        raise ValueError(f"continuation {cont!r} encodes to no tokens")
      rows.append(c + x)
      starts.append(len(c))
    width = gen.round_up(max(map(len, rows)), _PAD_MULTIPLE)
    if width > self.cfg_full.max_position_embeddings:
      raise ValueError(
        f"context + continuation of {max(map(len, rows))} tokens exceeds "
        f"max_position_embeddings={self.cfg_full.max_position_embeddings}"
      )
    ids = np.full((len(rows), width), self.tokenizer.pad_id, np.int32)
    for i, r in enumerate(rows):  # right padding: later tokens never affect earlier logits
      ids[i, : len(r)] = r
    params, rowwise = self._params_for(instr, chat)
    logp = np.asarray(_token_logprobs(self.cfg_k, rowwise)(params, jnp.asarray(ids)))
    # logp[:, t] scores token t + 1.
    return [float(logp[i, s - 1 : len(r) - 1].sum()) for i, (r, s) in enumerate(zip(rows, starts))]

  def single_token_ids(self, continuations: Sequence[str]) -> list[int] | None:
    """The token id of each continuation when every one encodes to exactly one token (what
    `choice_loglikelihoods` needs), else None."""
    ids = [self.tokenizer.encode(c) for c in continuations]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None

  def choice_loglikelihoods(
    self,
    contexts: Sequence[str],
    choices: Sequence[str],
    *,
    instructions=None,
    chat: bool = False,
    batch_size: int = 16,
  ) -> list[list[float]]:
    """log p(choice | context) [len(contexts)][len(choices)] for single-token choices (e.g.
    answer letters): one forward pass per context scores every choice, as lm-eval does.

    Equal to `loglikelihood(context, choice)` of each pair (same tokenisation: context and
    continuation encoded apart), at 1/len(choices) of the cost. Rows are grouped by token
    length inside the call, so a batch is padded only to its own longest context.
    """
    choice_ids = self.single_token_ids(choices)
    if choice_ids is None:
      raise ValueError(
        f"choice_loglikelihoods needs single-token choices; {list(choices)!r} encode to "
        f"{[len(self.tokenizer.encode(c)) for c in choices]} tokens"
      )
    instr = None if self.mode == "full" else self._instructions(contexts, instructions)
    encoded = []
    for ctx in contexts:
      c = self.encode_prompt(ctx, chat) if chat else self.tokenizer.encode(ctx)
      encoded.append(c or [self.tokenizer.bos_id])  # an empty context conditions on BOS
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[list[float]] = [[] for _ in encoded]
    for lo in range(0, len(order), batch_size):
      rows = order[lo : lo + batch_size]
      width = gen.round_up(max(len(encoded[i]) for i in rows), _PAD_MULTIPLE)
      if width > self.cfg_full.max_position_embeddings:
        raise ValueError(
          f"context of {max(len(encoded[i]) for i in rows)} tokens exceeds "
          f"max_position_embeddings={self.cfg_full.max_position_embeddings}"
        )
      ids = np.full((len(rows), width), self.tokenizer.pad_id, np.int32)
      for j, i in enumerate(rows):  # right padding: later tokens never affect earlier logits
        ids[j, : len(encoded[i])] = encoded[i]
      last = np.asarray([len(encoded[i]) - 1 for i in rows], np.int32)
      params, rowwise = self._params_for(None if instr is None else [instr[i] for i in rows])
      logp = _choice_logprobs(self.cfg_k, rowwise)(
        params, jnp.asarray(ids), jnp.asarray(last), jnp.asarray(choice_ids, jnp.int32)
      )
      for i, vals in zip(rows, np.asarray(logp).tolist()):
        out[i] = [float(v) for v in vals]
    return out
