"""The built-in skill suite (ifp_jax/data/skills.py): exact match per skill and per domain.

Eval inputs come from the suite's structural eval split (a hash bucket of (skill, input) that
training never draws), so any seed gives held-out examples; the seed is the run's own skills
seed when its SFT mixture has one. Prompts are one ChatML user turn, as in SFT. Per-task masks
read the skill's canonical instruction (`skills.task_instruction`, or an override).
"""

from __future__ import annotations

from typing import Any

from ifp_jax.data import skills
from ifp_jax.evals import common

NAME = "skills"
DEFAULT_LIMIT = 4  # examples per skill (14 skills)
MAX_NEW_TOKENS = 24  # the longest answer is 7 characters + end of turn


def run_seed(run: Any) -> int:
  """The seed of the run's skills source (0 when it has none)."""
  return int((common.sft_source_options(run, "skills") or {}).get("seed", 0))


def examples(limit: int | None, seed: int = 0) -> list[dict[str, str]]:
  """`limit` eval examples per skill (None/0: 50 per skill)."""
  per_skill = limit or 50
  return skills.generate("eval", per_skill * len(skills.SKILLS), seed)


def run(ctx: common.EvalContext, limit: int | None) -> dict[str, Any]:
  exs = examples(limit, run_seed(ctx.reference))
  max_new = ctx.max_new_tokens or MAX_NEW_TOKENS
  prompts, cut = common.fit_prompts(ctx.runner, [e["prompt"] for e in exs], max_new, chat=True)
  instr = ctx.predictor_inputs([e["prompt"] for e in exs], [(e["skill"], e["domain"]) for e in exs])
  preds = common.batched_generate(ctx, prompts, instr, max_new_tokens=max_new, chat=True)
  correct = [float(skills.exact_match(p, e["answer"])) for p, e in zip(preds, exs)]
  nll = answer_nll(ctx, exs, instr)
  ctx.write_samples(
    NAME,
    [
      {**e, "prediction": p, "correct": bool(c), "answer_nll": v}
      for e, p, c, v in zip(exs, preds, correct, nll, strict=True)
    ],
  )
  return {
    NAME: common.result(
      "exact_match",
      common.mean(correct),
      len(exs),
      _by_skill_and_domain(exs, correct),
      prompts_truncated=cut,
      answer_nll=common.mean(nll),
      answer_nll_groups=_by_skill_and_domain(exs, nll),
    )
  }


def _by_skill_and_domain(exs: list[dict[str, str]], values: list[float]) -> dict[str, Any]:
  by_skill = common.group_means([e["skill"] for e in exs], values)
  by_domain = common.group_means([e["domain"] for e in exs], values)
  return {**{f"domain:{k}": v for k, v in by_domain.items()}, **by_skill}


def answer_nll(
  ctx: common.EvalContext, exs: list[dict[str, str]], instr: list[str] | None
) -> list[float]:
  """Per-token NLL (nats) of each gold answer after its chat prompt, under the variant."""
  answers = [e["answer"] for e in exs]
  ll = ctx.runner.loglikelihood(
    [e["prompt"] for e in exs], answers, instructions=instr, chat=True, batch_size=ctx.batch_size
  )
  return [-v / len(ctx.runner.tokenizer.encode(a)) for v, a in zip(ll, answers, strict=True)]
