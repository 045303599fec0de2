"""Regime (b) of benchmarks/repro_smollm2.py after SFT: launch.eval of the three joint SFT runs
on the same held-out items (skills, reasoning-gym math, MMLU), and the page section.

Variants, all at k = 512 of 1536 units but `full`:
  per_input  joint_ifp_sft, its predictor reading each prompt (the paper's deployment);
  per_task   joint_ifp_sft, its predictor reading the task's instruction (one mask per task);
  static_table  joint_static_sft's one learned table;
  griffin_ft    GRIFFIN's training-free per-prompt units on joint_full_sft's LLM (fine-tuned
                alike);
  full_ft       joint_full_sft, every unit (the upper bound).
Paired per-item differences (mean +- 2 s.e.) come from the per-sample files of launch.eval.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = ("joint_full_sft", "joint_static_sft", "joint_ifp_sft")
BENCHMARKS = "skills,math,mmlu"
VARIANTS = ("per_input", "per_task", "static_table", "griffin_ft", "full_ft")
# (label, samples file, per-sample field, higher is better)
MEASURES = (
  ("skills exact match", "skills", "correct", True),
  ("skills answer NLL", "skills", "answer_nll", False),
  ("math score", "math", "score", True),
  ("math answer NLL", "math", "answer_nll", False),
  ("MMLU 0-shot acc", "mmlu_0shot", "correct", True),
  ("MMLU 5-shot acc", "mmlu_5shot", "correct", True),
)
PAIRS = (
  ("per_input", "static_table"),
  ("per_input", "griffin_ft"),
  ("per_input", "per_task"),
  ("per_input", "full_ft"),
  ("static_table", "griffin_ft"),
)


def _variants_flag(runs: dict[str, pathlib.Path]) -> str:
  full, static = runs["joint_full_sft"], runs["joint_static_sft"]
  return ",".join(
    [
      "per_input",
      "per_task",
      f"baseline:static_table={static}",
      f"baseline:griffin_ft={full}@griffin",
      f"baseline:full_ft={full}",
    ]
  )


def _value(row: dict, field: str) -> float:
  if field == "correct" and "correct" not in row:  # MMLU rows: the predicted letter
    return float(row["prediction"] == row["answer"])
  return float(row[field])


def _paired(a: list[float], b: list[float]) -> dict[str, float]:
  d = [x - y for x, y in zip(a, b, strict=True)]
  mean = sum(d) / len(d)
  var = sum((x - mean) ** 2 for x in d) / (len(d) - 1) if len(d) > 1 else float("nan")
  return {"mean": mean, "se": math.sqrt(var / len(d)) if len(d) > 1 else float("nan"), "n": len(d)}


def run_eval(work: pathlib.Path, limit: str, reuse: bool, timings: dict) -> dict:
  """launch.eval in a subprocess (reused when the request and the runs are unchanged); returns
  the record's `regime_b` entry."""
  runs = {n: work / f"b_{n}" for n in RUNS}
  missing = [str(w) for w in runs.values() if not (w / "summary.json").is_file()]
  if missing:
    raise RuntimeError(f"regime_b: SFT runs not trained: {', '.join(missing)}")
  request = {
    "benchmarks": BENCHMARKS,
    "variants": _variants_flag(runs),
    "limit": limit,
    "runs": {
      n: hashlib.sha256((w / "summary.json").read_bytes()).hexdigest()[:16] for n, w in runs.items()
    },
  }
  out = work / "b_sft_eval"
  done = out / "results.json"
  same = (out / "request.json").is_file() and json.loads(
    (out / "request.json").read_text()
  ) == request
  cmd = [
    sys.executable,
    "-m",
    "launch.eval",
    f"--workdir={runs['joint_ifp_sft']}",
    f"--benchmarks={BENCHMARKS}",
    f"--variants={request['variants']}",
    f"--limit={limit}",
    f"--out_dir={out}",
    "--nomask_analysis",
    "--batch_size=16",
  ]
  if reuse and same and done.is_file():
    print("[regime_b] eval reused (same runs and request)", flush=True)
  else:
    out.mkdir(parents=True, exist_ok=True)
    (out / "request.json").unlink(missing_ok=True)
    print(f"[regime_b] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(out / "eval.log", "w") as log:
      rc = subprocess.call(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
      raise RuntimeError(f"launch.eval failed (rc {rc}); see {out / 'eval.log'}")
    timings["regime_b_eval_s"] = time.perf_counter() - t0
    (out / "request.json").write_text(json.dumps(request, indent=1))
  return summarise(out, request, runs)


def summarise(out: pathlib.Path, request: dict, runs: dict[str, pathlib.Path]) -> dict:
  results = json.loads((out / "results.json").read_text())
  values: dict[str, dict[str, list[float]]] = {}
  n: dict[str, int] = {}
  for label, bench, field, _ in MEASURES:
    values[label] = {}
    for v in VARIANTS:
      rows = (out / "samples" / v / f"{bench}.jsonl").read_text().splitlines()
      values[label][v] = [_value(json.loads(r), field) for r in rows]
    n[label] = len(values[label]["per_input"])
  mean = {label: {v: sum(x) / len(x) for v, x in per.items() if x} for label, per in values.items()}
  paired = {
    label: {f"{a}-{b}": _paired(per[a], per[b]) for a, b in PAIRS} for label, per in values.items()
  }
  groups = {
    v: results["results"][v]["mmlu_5shot"]["groups"] for v in VARIANTS if v in results["results"]
  }
  steps = {v: results["variants"][v]["step"] for v in VARIANTS}
  return {
    "eval_dir": str(out),
    "command_variants": request["variants"],
    "limit": request["limit"],
    "runs": {k: str(w) for k, w in runs.items()},
    "steps": steps,
    "n": n,
    "mean": mean,
    "paired": paired,
    "mmlu_5shot_groups": groups,
    "eval_seconds": results.get("seconds"),
  }


def page_lines(rec: dict) -> list[str]:
  """The results page's regime (b) section."""
  lines = [
    "",
    "## Regime (b) after SFT: skills, reasoning-gym math, MMLU (launch.eval)",
    "",
    "The joint CPT runs of the perplexity table (b_full, b_static, b_ifp_*) went on with an SFT",
    "stage of the same length (configs/repro_smollm2/joint_sft.py: ShareGPT pairs of the calib",
    "split, the skill suite, reasoning-gym arithmetic and GSM problems); b_sft_* in the tables",
    "above are these runs' held-out perplexities. Here launch.eval scores them on the same",
    f"held-out items (`--limit={rec['limit']}`; checkpoint step of each variant's run: "
    + ", ".join(f"{v} {s}" for v, s in rec["steps"].items())
    + "):",
    "per_input / per_task = joint_ifp_sft's predictor reading the prompt / the task's",
    "instruction; static_table = joint_static_sft's table; griffin_ft = GRIFFIN's",
    "training-free per-prompt units on joint_full_sft's LLM; full_ft = joint_full_sft, every",
    "unit.",
    "",
    "| variant | " + " | ".join(f"{m} (n={rec['n'][m]})" for m, *_ in MEASURES) + " |",
    "|---" * (len(MEASURES) + 1) + "|",
  ]
  for v in VARIANTS:
    cells = [f"{rec['mean'][m][v]:.3f}" if v in rec["mean"][m] else "-" for m, *_ in MEASURES]
    lines.append(f"| {v} | " + " | ".join(cells) + " |")
  lines += [
    "",
    "Paired per-item differences A - B, mean +- 2 s.e. (accuracies and scores: positive = A",
    "better; answer NLL: negative = A better):",
    "",
    "| measure | " + " | ".join(f"{a} - {b}" for a, b in PAIRS) + " |",
    "|---" * (len(PAIRS) + 1) + "|",
  ]
  for m, *_ in MEASURES:
    cells = []
    for a, b in PAIRS:
      p = rec["paired"][m][f"{a}-{b}"]
      cells.append(f"{p['mean']:+.3f} +- {2 * p['se']:.3f}")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  lines += ["", "Verdicts (beyond 2 s.e. or not):", ""]
  for m, _, _, higher in MEASURES:
    said = []
    for a, b in PAIRS[:3]:
      p = rec["paired"][m][f"{a}-{b}"]
      better = (p["mean"] > 0) == higher
      win, lose = (a, b) if better else (b, a)
      sig = "beyond" if abs(p["mean"]) > 2 * p["se"] else "within"
      said.append(f"{win} better than {lose} ({sig} 2 s.e.)" if p["mean"] else f"{a} = {b}")
    lines.append(f"- {m}: " + "; ".join(said) + ".")
  groups = rec["mmlu_5shot_groups"]
  names = sorted({g for per in groups.values() for g in per})
  if names:
    lines += [
      "",
      "MMLU 5-shot accuracy by subject group (chance 0.25):",
      "",
      "| variant | " + " | ".join(names) + " |",
      "|---" * (len(names) + 1) + "|",
    ]
    for v, per in groups.items():
      cells = []
      for g in names:
        x = per.get(g)
        score = x.get("score") if isinstance(x, dict) else x
        cells.append("-" if score is None else f"{score:.2f}")
      lines.append(f"| {v} | " + " | ".join(cells) + " |")
  return lines
