"""HumanEval path: real problems, real execution in the sandbox (own process, limits)."""

import pytest

from ifp_jax.evals import humaneval, sandbox


@pytest.fixture(scope="module")
def problems():
  return humaneval.load_problems()


def test_problems_load(problems):
  assert len(problems) == 164
  assert problems[0]["task_id"] == "HumanEval/0"
  assert all(
    p["prompt"].rstrip().endswith(('"""', "'''")) or "def " in p["prompt"] for p in problems
  )


def test_canonical_solutions_pass_and_wrong_ones_fail(problems):
  chosen = [problems[i] for i in (0, 2, 12, 53, 162)]  # 162 imports hashlib
  canonical = humaneval.check_completions(chosen, [p["canonical_solution"] for p in chosen])
  assert [r.status for r in canonical] == ["passed"] * len(chosen), canonical
  wrong = humaneval.check_completions(chosen, ["    return None\n"] * len(chosen))
  assert [r.status for r in wrong] == ["failed"] * len(chosen)
  assert "AssertionError" in wrong[0].detail
  # A plausible but wrong body: add_two numbers problem 53 with subtraction.
  sub = problems[53]["canonical_solution"].replace("+", "-")
  assert humaneval.check_completions([problems[53]], [sub])[0].status == "failed"


def test_sandbox_limits():
  assert sandbox.run_program("print('ok')").passed
  assert sandbox.run_program("while True:\n  pass\n", timeout=1).status == "timeout"
  hog = sandbox.run_program("x = bytearray(4 << 30)\n", memory_mb=512)
  assert hog.status == "failed" and "MemoryError" in hog.detail
  # Runs in its own temporary working directory, not ours.
  import os

  assert sandbox.run_program(f"import os\nassert os.getcwd() != {os.getcwd()!r}\n").passed
  # Destructive calls are disabled inside the program.
  assert sandbox.run_program("import os\nos.system('true')\n").status == "failed"


def test_bad_problem_file(tmp_path):
  bad = tmp_path / "he.jsonl"
  bad.write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
  with pytest.raises(ValueError, match=r"he.jsonl:1: missing string fields"):
    humaneval.load_problems(bad)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    humaneval.load_problems(tmp_path / "nope.jsonl.gz")
