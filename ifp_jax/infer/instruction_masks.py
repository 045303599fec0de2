"""Instruction -> kept FFN units: the predictor half of pruned inference and export.

The predictor reads the instruction exactly as in SFT training (`data/sft.py`): the raw tokens
of the first user message in the predictor's tokenizer (`LoadedRun.predictor_tokenizer`: its
own, or the LLM's), no chat template, cut to `max_prompt_len`, right-padded. Eval masks
are deterministic (hard top-k of the scores / log-alphas; the static mask for `static`).

Named tasks (`--task=NAME`) resolve through `task_instruction`: every skill of the built-in
suite, each skill domain, and the benchmark tasks of launch.eval.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.data import skills
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.gather import gather_ffn, gathered_config, kept_indices
from ifp_jax.model.ifp_model import IFPConfig, IFPModel

# One-to-three-sentence task prompts in the spirit of the paper's per-task instructions.
DOMAIN_INSTRUCTIONS = {
  "arithmetic": "Solve the arithmetic problem about the two numbers and answer with a number.",
  "string": "Transform the given word as instructed and answer with the resulting text.",
  "code": "Evaluate the Python code or list operation and answer with the resulting value.",
}
BENCHMARK_INSTRUCTIONS = {
  "humaneval": "Write a correct Python function that implements the given docstring.",
  "gsm": "Solve the grade-school math word problem step by step and give the final number.",
  "math": "Solve the math problem and give the final answer.",
  "mmlu": "Answer the multiple-choice question by picking the correct option.",
}


def task_names() -> list[str]:
  return sorted(set(skills.SKILLS_BY_NAME) | set(DOMAIN_INSTRUCTIONS) | set(BENCHMARK_INSTRUCTIONS))


def task_instruction(name: str) -> str:
  """The instruction of a named task (skill, skill domain or benchmark)."""
  if name in skills.SKILLS_BY_NAME:
    return skills.task_instruction(name)
  if name in DOMAIN_INSTRUCTIONS:
    return DOMAIN_INSTRUCTIONS[name]
  if name in BENCHMARK_INSTRUCTIONS:
    return BENCHMARK_INSTRUCTIONS[name]
  raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")


def encode_instructions(
  tokenizer, texts: Sequence[str], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
  """Predictor inputs as in SFT training: ids [B, max_len] right-padded, lengths [B] (>= 1)."""
  ids = np.full((len(texts), max_len), tokenizer.pad_id, np.int32)
  lengths = np.ones(len(texts), np.int32)
  for i, text in enumerate(texts):
    toks = tokenizer.encode(text)[:max_len]
    if not toks:
      raise ValueError(f"instruction {i} is empty after tokenization: {text!r}")
    ids[i, : len(toks)] = toks
    lengths[i] = len(toks)
  return ids, lengths


@functools.lru_cache(maxsize=16)
def _masks_fn(ifp: IFPConfig):
  def fn(params, ids, lengths):
    out = IFPModel(ifp).apply(
      {"params": params},
      predictor_ids=ids,
      predictor_lengths=lengths,
      batch=ids.shape[0],
      deterministic=True,
      method=IFPModel.masks,
    )
    return out.masks[:, 0], out.scores[:, 0]  # one chunk per instruction: [B, L, F]

  return jax.jit(fn)


def predict_masks(
  ifp: IFPConfig, params: Any, tokenizer, texts: Sequence[str], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
  """(hard masks [B, L, F] with exactly k ones per layer, scores [B, L, F]) per instruction.

  A `static` run gives its one learned mask for every instruction (the model ignores the ids).
  """
  if not ifp.has_masks:
    raise ValueError("this run has mask_kind='none' (a dense model): nothing to predict")
  ids, lengths = encode_instructions(tokenizer, texts, max_len)
  masks, scores = _masks_fn(ifp)(params, jnp.asarray(ids), jnp.asarray(lengths))
  return np.asarray(masks), np.asarray(scores)


def kept_units(
  ifp: IFPConfig, params: Any, tokenizer, texts: Sequence[str], max_len: int
) -> np.ndarray:
  """Sorted kept-unit indices [B, L, k] per instruction."""
  masks, _ = predict_masks(ifp, params, tokenizer, texts, max_len)
  return np.asarray(kept_indices(masks, ifp.k))


def pruned_model(
  ifp: IFPConfig, params: Any, indices: np.ndarray
) -> tuple[LlamaConfig, dict[str, Any]]:
  """(config, params) of the dense width-k decoder keeping `indices` [L, k]."""
  return gathered_config(ifp.llm, indices.shape[-1]), gather_ffn(params["llm"], indices)


def max_prompt_len(meta: dict) -> int:
  """The predictor input length a run was trained with (from its checkpoint metadata)."""
  return int(meta["config"]["data"]["max_prompt_len"])
