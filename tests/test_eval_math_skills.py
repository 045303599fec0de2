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
