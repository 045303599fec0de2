"""The built-in skill suite: coverage, correctness, determinism, train/eval disjointness."""

import collections

import pytest

from ifp_jax.data import skills


def test_suite_size_domains_and_paraphrases():
  assert len(skills.SKILLS) >= 8
  assert len(skills.DOMAINS) >= 3
  per_domain = collections.Counter(s.domain for s in skills.SKILLS)
  assert all(n >= 2 for n in per_domain.values())
  for s in skills.SKILLS:
    assert len(set(s.instructions)) >= 3, s.name
    assert skills.task_instruction(s.name) == s.task_instruction


def test_example_fields_and_answers():
  ex = skills.generate("train", 200, seed=3)
  for e in ex:
    assert set(e) == {"skill", "domain", "instruction", "input", "prompt", "answer"}
    assert e["prompt"] == f"{e['instruction']}\n{e['input']}"
    assert e["instruction"] in skills.SKILLS_BY_NAME[e["skill"]].instructions
    assert 0 < len(e["answer"]) <= 12
  assert {e["skill"] for e in ex} == set(skills.SKILLS_BY_NAME)  # round-robin covers all
  solve = {s.name: s.solve for s in skills.SKILLS}
  assert solve["add"]("37, 45") == "82"
  assert solve["subtract"]("3, 45") == "-42"
  assert solve["multiply"]("7, 8") == "56"
  assert solve["max"]("37, 45") == "45"
  assert solve["reverse"]("abc") == "cba"
  assert solve["uppercase"]("abc") == "ABC"
  assert solve["sort_letters"]("dcba") == "abcd"
  assert solve["count_letters"]("hello") == "5"
  assert solve["list_len"]("xs = [5, 8, 2]") == "3"
  assert solve["list_sum"]("xs = [5, 8, 2]") == "15"
  assert solve["list_index"]("xs = [5, 8, 2]; i = 1") == "8"
  assert solve["python_expr"]("3 + 4 * 2") == "11"
  with pytest.raises(ValueError):
    solve["python_expr"]("__import__('os')")


def test_deterministic_by_seed():
  assert skills.generate("train", 50, seed=1) == skills.generate("train", 50, seed=1)
  assert skills.generate("train", 50, seed=1) != skills.generate("train", 50, seed=2)
  sub = skills.generate("eval", 20, seed=0, skills=["add", "reverse"])
  assert {e["skill"] for e in sub} == {"add", "reverse"}
  with pytest.raises(ValueError, match="unknown skills"):
    skills.generate("train", 1, skills=["nope"])


def test_train_eval_disjoint():
  train = skills.generate("train", 3000, seed=0)
  evals = skills.generate("eval", 500, seed=0)
  train_inputs = {(e["skill"], e["input"]) for e in train}
  eval_inputs = {(e["skill"], e["input"]) for e in evals}
  assert not train_inputs & eval_inputs
  assert all(skills.is_eval_input(*k) for k in eval_inputs)
  assert not any(skills.is_eval_input(*k) for k in train_inputs)
  # a different train seed still never produces an eval input
  other = skills.generate("train", 1000, seed=7)
  assert not {(e["skill"], e["input"]) for e in other} & eval_inputs


def test_exact_match():
  assert skills.exact_match(" 82 ", "82")
  assert skills.exact_match("82.\nextra text", "82")
  assert skills.exact_match("`cba`", "cba")
  assert not skills.exact_match("abc", "ABC")  # case matters (uppercase is a skill)
  assert not skills.exact_match("8", "82")
  assert skills.exact_match("[1,  2]", "[1, 2]")
