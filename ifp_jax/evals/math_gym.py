"""reasoning-gym math on held-out seeds, scored by reasoning-gym's own `score_answer`.

Held-out seeds follow the data package's convention (`sources.reasoning_gym_seeds`): train items
of seed s use the item-seed block [2sB, 2sB + B) and eval items [(2s+1)B, (2s+2)B), so eval items
are never training items whatever seed trained the run (every eval block is odd, every train
block even). s is the run's reasoning_gym seed when its SFT mixture has one, else 0.

The answer is read from the reply as SFT taught it: the content of `<answer>...</answer>` if
present, else what follows the last "answer is" / "Answer:", else the first line. The score is
reasoning-gym's (1.0 = correct; some tasks give partial credit for near-misses), and
`exact` counts replies scored 1.0.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from ifp_jax.data import sources
from ifp_jax.evals import common, skill_suite

NAME = "math"
DEFAULT_TASKS = ("basic_arithmetic", "gsm_symbolic")
DEFAULT_LIMIT = 8  # items per task
MAX_NEW_TOKENS = 48
# Task -> the per-task instruction key (override any task with 'rg:<task>').
TASK_INSTRUCTION_KEYS = {"gsm_symbolic": "gsm"}

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_ANSWER_IS = re.compile(r"(?:answer is|answer:)\s*(.+)", re.I)


def extract_answer(reply: str) -> str:
  tags = _ANSWER_TAG.findall(reply)
  if tags:
    return tags[-1].strip()
  said = _ANSWER_IS.findall(reply)
  if said:
    return said[-1].strip().split("\n", 1)[0].strip()
  lines = [ln.strip() for ln in reply.strip().split("\n") if ln.strip()]
  return lines[0] if lines else ""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Which reasoning-gym items a run is evaluated on."""

  tasks: tuple[str, ...]
  kwargs: dict[str, dict[str, Any]]
  seed: int
  train_size: int  # training items per task to exclude (0: the run trained on none)


def task_spec(run: Any) -> TaskSpec:
  src = common.sft_source_options(run, "reasoning_gym")
  if src is None:
    return TaskSpec(DEFAULT_TASKS, {}, 0, 0)
  kwargs = {t: _plain(kw) for t, kw in dict(src.get("task_kwargs") or {}).items()}
  return TaskSpec(
    tuple(src.get("tasks") or ("basic_arithmetic",)),
    kwargs,
    int(src.get("seed", 0)),
    int(src.get("size", 1000)),
  )


def _plain(kw: dict[str, Any]) -> dict[str, Any]:
  # Config round trips turn tuples into lists; reasoning-gym wants tuples (e.g. operators).
  return {k: tuple(v) if isinstance(v, list) else v for k, v in dict(kw).items()}


def datasets(
  tasks: Sequence[str], size: int, seed: int, kwargs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
  """{task: reasoning-gym dataset of `size` held-out items}."""
  import reasoning_gym

  _, eval_seed = sources.reasoning_gym_seeds(seed)
  out = {}
  for task in tasks:
    try:
      out[task] = reasoning_gym.create_dataset(
        task, size=size, seed=eval_seed, **(kwargs or {}).get(task, {})
      )
    except (KeyError, ValueError, TypeError) as e:
      raise ValueError(f"reasoning-gym task {task!r}: {e}") from e
  return out


def held_out_items(spec: TaskSpec, size: int) -> tuple[dict[str, Any], list[tuple[str, Any]], int]:
  """(datasets, [(task, item)] not among the run's training questions, items dropped)."""
  dsets = datasets(spec.tasks, size, spec.seed, spec.kwargs)
  train_seed, _ = sources.reasoning_gym_seeds(spec.seed)
  items, dropped = [], 0
  for task, ds in dsets.items():
    seen = set()
    if spec.train_size:
      seen = {
        r["question"]
        for r in sources.reasoning_gym_examples(
          task, spec.train_size, train_seed, **spec.kwargs.get(task, {})
        )
      }
    for i in range(size):
      if str(ds[i]["question"]) in seen:
        dropped += 1
      else:
        items.append((task, ds[i]))
  return dsets, items, dropped


def instruction_keys(task: str) -> tuple[str, ...]:
  return (f"rg:{task}", TASK_INSTRUCTION_KEYS.get(task, "math"))


def run(
  ctx: common.EvalContext, limit: int | None, tasks: Sequence[str] | None = None
) -> dict[str, Any]:
  size = limit or 200
  spec = task_spec(ctx.reference)
  if tasks is not None:
    spec = dataclasses.replace(spec, tasks=tuple(tasks))
  key = ("math", spec.tasks, size, spec.seed)
  if key not in ctx.cache:
    ctx.cache[key] = held_out_items(spec, size)
  dsets, items, dropped = ctx.cache[key]
  questions = [str(e["question"]) for _, e in items]
  max_new = ctx.max_new_tokens or MAX_NEW_TOKENS
  prompts, cut = common.fit_prompts(ctx.runner, questions, max_new, chat=True)
  instr = ctx.predictor_inputs(questions, [instruction_keys(t) for t, _ in items])
  replies = common.batched_generate(ctx, prompts, instr, max_new_tokens=max_new, chat=True)
  # Per-token NLL of the gold answer after the question (skill_suite's rule): a graded measure
  # where exact match is near 0 for every variant.
  nll = skill_suite.answer_nll(
    ctx, [{"prompt": q, "answer": str(e["answer"])} for q, (_, e) in zip(questions, items)], instr
  )
  scores, answers = [], []
  for (task, entry), reply in zip(items, replies):
    answer = extract_answer(reply)
    answers.append(answer)
    scores.append(float(dsets[task].score_answer(answer, entry) or 0.0))
  ctx.write_samples(
    NAME,
    [
      {
        "task": t,
        "question": e["question"],
        "answer": str(e["answer"]),
        "reply": r,
        "extracted": a,
        "score": s,
        "answer_nll": v,
      }
      for (t, e), r, a, s, v in zip(items, replies, answers, scores, nll, strict=True)
    ],
  )
  exact = [float(s >= 1.0) for s in scores]
  return {
    NAME: common.result(
      "reasoning_gym_score",
      common.mean(scores),
      len(items),
      common.group_means([t for t, _ in items], scores),
      exact=common.mean(exact),
      answer_nll=common.mean(nll),
      answer_nll_groups=common.group_means([t for t, _ in items], nll),
      prompts_truncated=cut,
      eval_seed=sources.reasoning_gym_seeds(spec.seed)[1],
      dropped_train_duplicates=dropped,
    )
  }
