"""Math (reasoning-gym) and skill-suite eval data: held out from training, scored correctly."""

from ifp_jax.data import skills, sources
from ifp_jax.evals import math_gym, skill_suite


def test_math_items_are_held_out_and_scored_by_reasoning_gym():
  size = 40
  dsets = math_gym.datasets(math_gym.DEFAULT_TASKS, size, seed=0)
  train_seed, _ = sources.reasoning_gym_seeds(0)
  for task, ds in dsets.items():
    train = {e["question"] for e in sources.reasoning_gym_examples(task, 400, train_seed)}
    held_out = [ds[i] for i in range(size)]
    assert not train & {e["question"] for e in held_out}, task
    # The scorer accepts the reference answer (also inside answer tags) and rejects junk.
    for e in held_out[:5]:
      assert ds.score_answer(math_gym.extract_answer(str(e["answer"])), e) == 1.0
      assert ds.score_answer(math_gym.extract_answer(f"<answer>{e['answer']}</answer>"), e) == 1.0
      assert ds.score_answer(math_gym.extract_answer("no idea"), e) < 1.0


class _Run:
  """What math_gym reads from a loaded run: the SFT sources in its config metadata."""

  def __init__(self, sources_cfg):
    self.meta = {"config": {"data": {"sft": {"sources": sources_cfg}}}}


def test_math_eval_follows_the_runs_tasks_and_drops_training_questions():
  # 1-digit a + b: 100 possible questions, so 60 training items cover many eval items.
  kw = {
    "min_terms": 2,
    "max_terms": 2,
    "min_digits": 1,
    "max_digits": 1,
    "operators": ["+"],
    "allow_parentheses": False,
    "allow_negation": False,
  }
  run = _Run(
    {
      "math": {
        "kind": "reasoning_gym",
        "options": {
          "tasks": ["basic_arithmetic"],
          "size": 60,
          "seed": 3,
          "task_kwargs": {"basic_arithmetic": kw},
        },
      }
    }
  )
  spec = math_gym.task_spec(run)
  assert spec.tasks == ("basic_arithmetic",) and spec.seed == 3 and spec.train_size == 60
  assert spec.kwargs["basic_arithmetic"]["operators"] == ("+",)  # lists back to tuples
  dsets, items, dropped = math_gym.held_out_items(spec, 40)
  train_seed, _ = sources.reasoning_gym_seeds(3)
  train = {
    e["question"]
    for e in sources.reasoning_gym_examples(
      "basic_arithmetic", 60, train_seed, **spec.kwargs["basic_arithmetic"]
    )
  }
  questions = [str(e["question"]) for _, e in items]
  assert dropped > 0 and len(items) + dropped == 40
  assert not set(questions) & train
  assert all(q.startswith("Calculate") and "+" in q and "-" not in q for q in questions)
  # A run without a reasoning_gym source is evaluated on the default tasks, nothing dropped.
  spec = math_gym.task_spec(_Run({"skills": {"kind": "skills", "options": {}}}))
  assert spec.tasks == math_gym.DEFAULT_TASKS and spec.train_size == 0


def test_extract_answer():
  assert math_gym.extract_answer("  42\nbecause") == "42"
  assert math_gym.extract_answer("First 3+4=7.\nSo the answer is 7") == "7"
  assert math_gym.extract_answer("x <answer>12</answer> y <answer>13</answer>") == "13"
  assert math_gym.extract_answer("") == ""


def test_skill_examples_are_eval_split():
  exs = skill_suite.examples(3, seed=0)
  assert len(exs) == 3 * len(skills.SKILLS)
  assert all(skills.is_eval_input(e["skill"], e["input"]) for e in exs)
  assert {e["skill"] for e in exs} == set(skills.SKILLS_BY_NAME)
