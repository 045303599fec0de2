"""launch.eval's engine: variants x benchmarks -> results.json / results.md / PNGs, plus the
mask analysis of the run's predictor.

Variants (`--variants`, comma-separated):
  full, per_input, per_task  the main run through `PrunedRunner` in that mode;
  baseline:NAME=WORKDIR      another run (latest checkpoint), in the mode its masks call for:
                             mask_kind 'none' (dense, e.g. width k) -> full; 'static' -> its one
                             static mask; a predictor run -> per_input;
  griffin                    the main run's LLM with GRIFFIN's training-free per-prompt units
                             (same k; ifp_jax/infer/griffin.py);
  baseline:NAME=WORKDIR@MODE the same in an explicit mode (full, per_input, per_task, griffin).
Default: full, per_input, per_task (only full for a dense main run; full and per_task, i.e. the
static mask, for a static one).

Everything that can be wrong with the request (unknown benchmark or variant, bad limits, a
missing checkpoint, an incompatible run or mode) fails before any benchmark starts.
"""

from __future__ import annotations

import datetime
import pathlib
import re
import time
from typing import Any, Sequence

from ifp_jax.evals import (
  common,
  humaneval,
  masks_analysis,
  math_gym,
  mmlu,
  perplexity,
  report,
  skill_suite,
)
from ifp_jax.infer import run_loader
from ifp_jax.model.ifp_model import mask_kind

BENCHMARKS = {m.NAME: m for m in (perplexity, skill_suite, math_gym, humaneval, mmlu)}
DEFAULT_BENCHMARKS = tuple(BENCHMARKS)
MODES = ("full", "per_input", "per_task", "griffin")
ANALYSIS_PROMPTS = 16  # prompts per domain for the mask analysis
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_benchmarks(spec: str | Sequence[str] | None) -> list[str]:
  names = (
    [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, str)
    else list(spec or DEFAULT_BENCHMARKS)
  )
  unknown = [n for n in names if n not in BENCHMARKS]
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
  if not names:
    raise ValueError(f"no benchmark selected; known: {', '.join(BENCHMARKS)}")
  return list(dict.fromkeys(names))


def parse_limits(spec: str | None, benchmarks: Sequence[str]) -> dict[str, int | None]:
  """'' -> each benchmark's DEFAULT_LIMIT; 'N' -> N for all; 'bench:N,...' per benchmark (a
  bare N in the list sets the rest). 0 = the whole benchmark (None in the result)."""
  base = {b: BENCHMARKS[b].DEFAULT_LIMIT for b in benchmarks}
  per: dict[str, int] = {}
  for item in [s.strip() for s in (spec or "").split(",") if s.strip()]:
    name, _, value = item.rpartition(":")
    try:
      n = int(value)
    except ValueError:
      raise ValueError(f"--limit item {item!r}: expected N or BENCHMARK:N") from None
    if n < 0:
      raise ValueError(f"--limit item {item!r}: N must be >= 0 (0 = the whole benchmark)")
    if not name:
      base = {b: n for b in benchmarks}
    elif name not in BENCHMARKS:
      raise ValueError(f"--limit names unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    else:
      per[name] = n
  return {b: (per.get(b, base[b]) or None) for b in benchmarks}


def parse_variants(spec: str | None, main_kind: str) -> list[tuple[str, str | None, str | None]]:
  """[(name, baseline workdir or None, mode or None (= from the baseline's mask kind))]."""
  if not spec:
    kind = mask_kind(main_kind)
    spec = (
      "full"
      if not kind.has_masks
      else "full,per_input,per_task"
      if kind.uses_predictor
      else "full,per_task"
    )
  out: list[tuple[str, str | None, str | None]] = []
  for item in [s.strip() for s in spec.split(",") if s.strip()]:
    if item in MODES:
      out.append((item, None, item))
    elif item.startswith("baseline:"):
      name, eq, path = item[len("baseline:") :].partition("=")
      head, at, mode = path.rpartition("@")
      if at and mode in MODES:
        path = head
      else:
        mode = None
      if not eq or not name or not path:
        raise ValueError(f"--variants item {item!r}: expected baseline:NAME=WORKDIR[@MODE]")
      if not _NAME.match(name) or name in MODES:
        raise ValueError(
          f"--variants item {item!r}: NAME must be letters, digits, '_.-' and not one of {MODES}"
        )
      out.append((name, path, mode))
    else:
      raise ValueError(
        f"unknown variant {item!r}; use {', '.join(MODES)} or baseline:NAME=WORKDIR[@MODE]"
      )
  names = [n for n, _, _ in out]
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate variant names in {names}")
  return out


def baseline_mode(run: Any) -> str:
  """A run's own mask mode: dense -> full; a mask without predictor -> per_task; else per_input."""
  kind = run.ifp.kind
  return "full" if not kind.has_masks else "per_input" if kind.uses_predictor else "per_task"


def variant_info(run: Any, mode: str) -> dict[str, Any]:
  d_ff = run.ifp.llm.intermediate_size
  return {
    "workdir": str(run.workdir),
    "step": run.step,
    "mode": mode,
    "mask_kind": run.ifp.mask_kind,
    "d_ff": d_ff,
    "ffn_units": d_ff if mode == "full" else run.ifp.k,
    "tokenizer": run.meta.get("tokenizer"),
  }


def analysis_prompts(
  benchmarks_cache: dict, n: int, run: Any
) -> tuple[dict[str, list[str]], list[str]]:
  """Prompts per domain for the mask analysis: the skill domains, the math tasks, HumanEval
  and MMLU (a domain whose data package is missing is left out, with a note)."""
  out: dict[str, list[str]] = {}
  notes = []
  exs = skill_suite.examples(n, skill_suite.run_seed(run))
  for e in exs:
    out.setdefault(e["domain"], []).append(e["prompt"])
  spec = math_gym.task_spec(run)
  for task, ds in math_gym.datasets(spec.tasks, n, spec.seed, spec.kwargs).items():
    out[task] = [str(ds[i]["question"]) for i in range(n)]
  try:
    out["humaneval"] = [p["prompt"] for p in humaneval.load_problems()[:n]]
  except FileNotFoundError as e:
    notes.append(str(e))
  try:
    pools, rest = benchmarks_cache.get("mmlu") or mmlu.split_shots(mmlu.load_questions())
    out["mmlu"] = [mmlu.question_block(q) for q in mmlu.select(rest, -(-n // 7))[:n]]
  except FileNotFoundError as e:
    notes.append(str(e))
  return {k: v[:n] for k, v in out.items()}, notes


def evaluate(
  workdir: str | pathlib.Path,
  *,
  benchmarks: str | Sequence[str] | None = None,
  limit: str | None = None,
  variants: str | None = None,
  step: int | None = None,
  instructions: str | None = None,
  batch_size: int = 32,
  max_new_tokens: int | None = None,
  data_dir: str | None = None,
  analysis: bool = True,
  out_dir: str | pathlib.Path | None = None,
  stream=None,
) -> dict[str, Any]:
  """Runs the eval and writes its outputs; returns the results.json record."""
  from ifp_jax.infer.pruned import PrunedRunner

  t0 = time.perf_counter()
  names = parse_benchmarks(benchmarks)
  limits = parse_limits(limit, names)
  instr = common.load_instructions(instructions)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  main = run_loader.load_run(workdir, step=step)
  specs = parse_variants(variants, main.ifp.mask_kind)
  runners: dict[str, Any] = {}
  for name, path, mode in specs:
    run = main if path is None else run_loader.load_run(path)
    runners[name] = PrunedRunner(run, mode or baseline_mode(run))
  out_dir = pathlib.Path(out_dir) if out_dir else main.workdir / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)

  do_analysis = analysis and main.ifp.has_masks
  progress = common.Progress(len(runners) * len(names) + int(do_analysis), stream)
  cache: dict = {}
  results: dict[str, dict[str, Any]] = {}
  for vname, runner in runners.items():
    results[vname] = {}
    for bname in names:
      progress.start(f"{vname} x {bname}")
      ctx = common.EvalContext(
        variant=vname,
        runner=runner,
        reference=main,
        instructions=instr,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        data_dir=data_dir,
        samples_dir=out_dir / "samples",
        cache=cache,
        progress=progress.update,
      )
      t = time.perf_counter()
      res = BENCHMARKS[bname].run(ctx, limits[bname])
      seconds = time.perf_counter() - t
      for r in res.values():
        r["seconds"] = round(seconds / len(res), 2)
      results[vname].update(res)
      progress.finish(", ".join(f"{k} {r['score']:.3f}" for k, r in res.items()))

  mask_record: dict[str, Any] = {
    "skipped": "--nomask_analysis" if not analysis else "the main run is dense (mask_kind 'none')"
  }
  if do_analysis:
    progress.start("mask analysis")
    prompts, notes = analysis_prompts(cache, ANALYSIS_PROMPTS, main)
    summary = masks_analysis.analyze(masks_analysis.domain_masks(main, prompts), main.ifp.k)
    mask_record = {
      "summary": summary,
      "files": masks_analysis.write(summary, out_dir),
      "notes": notes,
    }
    progress.finish()
  progress.close()

  record = {
    "workdir": str(main.workdir),
    "step": main.step,
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "seconds": round(time.perf_counter() - t0, 1),
    "settings": {
      "benchmarks": names,
      "limits": limits,
      "batch_size": batch_size,
      "max_new_tokens": max_new_tokens,
      "variants": variants or "(default)",
      "instructions": instr,
      "data_dir": data_dir,
    },
    "variants": {n: variant_info(r.run, r.mode) for n, r in runners.items()},
    "results": results,
    "mask_analysis": mask_record,
  }
  report.write(record, out_dir)
  return record
