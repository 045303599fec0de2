"""A miniature reproduction of the paper's main claim, end to end, on one CPU machine.

  python benchmarks/repro.py [--workdir=runs/repro] [--out=benchmarks/results/repro]
      [--runs=dense_full,dense_small,static,ifp] [--limit=perplexity:64,skills:50,math:100]
      [--quick]

Claim (IFPruning, Tables 1-2): an LLM of full FFN width F whose units are chosen per input by
a sparsity predictor, keeping k < F, beats a dense model of width k (the same activated size)
and comes close to the dense model of width F. As in the paper, every method starts from a
pretrained dense checkpoint, and all get the same continued pre-training + SFT budget
(configs/repro/common.py: byte-level 4 x 128 Llama, F = 512, k = 128; CPT on Python stdlib
source, then SFT on the skill suite + reasoning-gym arithmetic):
  pretrain_full   dense d_ff = F, CPT text only (from random init)
  pretrain_small  dense d_ff = k, the same steps
  dense_full      d_ff = F, no masks                          from pretrain_full
  dense_small     d_ff = k, no masks                          from pretrain_small
  static          F -> k, one learned mask (HardConcrete + Lagrangian), top-k at inference;
                                                              from pretrain_full
  ifp             F -> k, predictor (the pretrained first layer + a head) + SoftTopK;
                  evaluated per input and per task            from pretrain_full
Each run is `python -m launch.train` in a subprocess (a finished run in --workdir is reused,
an interrupted one resumes from its checkpoint); pretrained runs reach the method runs as HF
folders written by `launch.export` (`--config.model.init_from=hf:DIR`). Then `launch.eval`'s
suite scores every variant on held-out data: perplexity on held-out CPT files, the skill
suite (exact match and the gold answer's per-token NLL, per skill and domain) and
reasoning-gym (its scorer; items that repeat a training question left out), and analyses the
IFP masks (overlap heatmaps). An identical earlier eval in --workdir is reused.

--ablation=NAME:X=V;Y=W (repeatable) retrains `ifp` from the same pretrained start with those
config overrides, as run ifp_NAME, and adds a table of its per-input scores next to the main
IFP run, each paired against dense-small on the same items (what to try when IFP does not win).

Writes to --out: results.md (the tables, claim checks, command, machine, timings),
results.json, domains.png (score per domain and method), loss_curves.png (training loss of
every run), mask_overlap.png / mask_layers.png (IFP masks per domain), and eval_results.md (the
full eval report). The claim checks are computed from the measured numbers, with standard
errors; nothing in the tables is typed in by hand.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import time

from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/repro", "Folder of the training runs and the eval.")
flags.DEFINE_string("out", "benchmarks/results/repro", "Folder for the committed results.")
flags.DEFINE_list(
  "runs",
  ["dense_full", "dense_small", "static", "ifp"],
  "Method runs to train and compare (configs/repro/NAME.py); must include ifp.",
)
flags.DEFINE_string(
  "limit",
  "perplexity:64,skills:100,math:200",
  "Eval samples (launch.eval --limit syntax; --quick: small unless given).",
)
flags.DEFINE_string("json", None, "Also write results.json's record here (benchmarks/README).")
flags.DEFINE_bool("quick", False, "Smoke run: a few steps per run, small eval (minutes).")
flags.DEFINE_list("override", [], "Extra --config.X=V overrides for every run (e.g. seed=1).")
flags.DEFINE_multi_string(
  "ablation",
  [],
  "NAME:X=V;Y=W: also train configs/repro/ifp.py with "
  "these overrides (from the same pretrained start) as run ifp_NAME and "
  "compare it per input with the main runs. Repeatable.",
)

METHODS = {  # variant name in the eval -> (table label, run)
  "dense_full": ("dense-full (d_ff = F)", "dense_full"),
  "dense_small": ("dense-small (d_ff = k)", "dense_small"),
  "static": ("static pruning F -> k", "static"),
  "per_input": ("IFP F -> k, per input", "ifp"),
  "per_task": ("IFP F -> k, per task", "ifp"),
}
# method run -> the pretrained dense run it starts from
PRETRAINED = {
  "dense_full": "pretrain_full",
  "static": "pretrain_full",
  "ifp": "pretrain_full",
  "dense_small": "pretrain_small",
}
# --quick: a few steps on small data (pretraining runs keep sft.steps = 0).
QUICK_OVERRIDES = [
  "cpt.warmup_steps=1",
  "sft.warmup_steps=1",
  "train.log_every=2",
  "train.eval_rows=16",
  "train.checkpoint_every=100",
  "data.sft.sources.skills.options.num_train=1400",
  "data.sft.sources.skills.options.num_eval=140",
  "data.sft.sources.math.options.size=200",
  "data.sft.sources.math.options.eval_size=20",
  "data.cpt.sources.stdlib.options.max_files=40",
]
QUICK_STEPS = {"pretrain": ["cpt.steps=6"], "method": ["cpt.steps=4", "sft.steps=6"]}
BENCHMARKS = ["perplexity", "skills", "math"]
QUICK_LIMIT = "perplexity:4,skills:2,math:4"


# --- training -------------------------------------------------------------------------------
def _overrides(name: str) -> list[str]:
  kind = "pretrain" if name in PRETRAINED.values() else "method"  # ablations are methods
  quick = QUICK_OVERRIDES + QUICK_STEPS[kind] if FLAGS.quick else []
  return quick + list(FLAGS.override)


def train(
  name: str, workdir: pathlib.Path, extra: list[str] = (), config: str | None = None
) -> dict:
  """Trains configs/repro/CONFIG.py (default NAME) into workdir/NAME (reused when finished)."""
  run_dir = workdir / name
  record_file = run_dir / "repro_train.json"
  overrides = _overrides(name) + list(extra)
  sha = config_sha(config or name)
  if record_file.exists():
    rec = json.loads(record_file.read_text())
    changed, added = [], []
    if rec.get("overrides") == overrides and rec.get("config_sha") != sha:
      changed, added = config_changes(run_dir, config or name, overrides)
    if rec.get("overrides") == overrides and not changed:
      if added:  # fields newer than the run, at their defaults: the code path it was trained on
        print(f"[repro] {name}: config fields added since it trained: {added}", flush=True)
      print(f"[repro] {name}: reusing the finished run in {run_dir}", flush=True)
      return rec
    sys.exit(
      f"repro: {run_dir} was trained with another config (overrides "
      f"{rec.get('overrides')}, now {overrides}; changed fields {changed or 'none'}); use "
      "another --workdir or delete it"
    )
  cmd = [
    sys.executable,
    "-m",
    "launch.train",
    f"--config=configs/repro/{config or name}.py",
    f"--workdir={run_dir}",
  ] + [f"--config.{o}" for o in overrides]
  print(f"[repro] training {name}: {' '.join(cmd[1:])}", flush=True)
  t0 = time.perf_counter()
  code = _stream(cmd, run_dir)
  if code != 0:
    sys.exit(f"repro: training {name} failed (exit {code}); its log: {run_dir / 'train.log'}")
  summary = json.loads((run_dir / "summary.json").read_text())
  rec = {
    "run": name,
    "seconds": round(time.perf_counter() - t0, 1),
    "overrides": overrides,
    "config_sha": sha,
    "step": summary["step"],
    "stages": summary["stages"],
  }
  record_file.write_text(json.dumps(rec, indent=2))
  return rec


def config_sha(config: str) -> str:
  """Hash of the config a run is built from (configs/repro/CONFIG.py resolved, before the
  command-line overrides, which the record keeps separately)."""
  import hashlib
  import importlib

  cfg = importlib.import_module(f"configs.repro.{config}").get_config()
  return hashlib.sha256(cfg.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def config_changes(run_dir: pathlib.Path, config: str, overrides: list[str]) -> tuple[list, list]:
  """(fields whose value differs, fields the run did not have) between the config the finished
  run in run_dir trained with (its config.json) and configs/repro/CONFIG.py now, leaving out
  the overridden fields (compared as strings with the record's)."""
  import importlib

  ran = _flat(json.loads((run_dir / "config.json").read_text()))
  now = _flat(
    json.loads(
      importlib.import_module(f"configs.repro.{config}").get_config().to_json_best_effort()
    )
  )
  overridden = {o.split("=", 1)[0] for o in overrides}
  changed = [
    f"{k}: {ran[k]!r} -> {v!r}"
    for k, v in sorted(now.items())
    if k in ran and k not in overridden and ran[k] != v
  ]
  changed += [f"{k}: {ran[k]!r} -> (gone)" for k in sorted(set(ran) - set(now) - overridden)]
  return changed, sorted(set(now) - set(ran))


def export_hf(name: str, workdir: pathlib.Path) -> pathlib.Path:
  """The finished run workdir/NAME as an HF folder (launch.export; reused when complete)."""
  from ifp_jax.io.export.writer import COMPLETE_MARKER

  out = workdir / name / "hf"
  if not (out / COMPLETE_MARKER).exists():
    cmd = [
      sys.executable,
      "-m",
      "launch.export",
      f"--workdir={workdir / name}",
      "--what=full",
      f"--out={out}",
      "--overwrite",
    ]
    print(f"[repro] exporting {name} -> {out}", flush=True)
    if _stream(cmd, workdir / name, "export.log") != 0:
      sys.exit(f"repro: exporting {name} failed; its log: {workdir / name / 'export.log'}")
  return out


def _stream(cmd: list[str], run_dir: pathlib.Path, log_name: str = "train.log") -> int:
  """Runs cmd, showing its progress lines and keeping its whole output in run_dir/train.log."""
  run_dir.mkdir(parents=True, exist_ok=True)
  with open(run_dir / log_name, "a") as log:
    proc = subprocess.Popen(
      cmd,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:
      log.write(line)
      if line.startswith(("[cpt]", "[sft]", "cpt:", "sft:")):
        print(f"  {line.rstrip()}", flush=True)
    return proc.wait()


# --- evaluation -----------------------------------------------------------------------------
def evaluate(main: pathlib.Path, out_dir: pathlib.Path, variants: list[str], limit: str) -> dict:
  """launch.eval's suite on `main` with `variants`; an earlier identical eval is reused."""
  from ifp_jax.evals import suite

  spec = ",".join(variants)
  prev = out_dir / "results.json"
  if prev.exists():
    rec = json.loads(prev.read_text())
    steps = {n: v["step"] for n, v in rec["variants"].items()}
    same = rec["settings"]["variants"] == spec and rec["settings"]["limits"] == suite.parse_limits(
      limit, BENCHMARKS
    )
    now = {n: _run_step(pathlib.Path(v["workdir"])) for n, v in rec["variants"].items()}
    if same and steps == now:
      print(f"[repro] reusing the eval in {out_dir}", flush=True)
      return rec
  print(
    f"[repro] evaluating {main.name}: {', '.join(v.split('=')[0] for v in variants)}", flush=True
  )
  return suite.evaluate(
    main,
    benchmarks=",".join(BENCHMARKS),
    limit=limit,
    variants=spec,
    out_dir=out_dir,
    stream=sys.stdout,
  )


def _run_step(run_dir: pathlib.Path) -> int | None:
  summary = run_dir / "summary.json"
  return json.loads(summary.read_text()).get("step") if summary.exists() else None


# --- tables ---------------------------------------------------------------------------------
def _se(p: float, n: int) -> float:
  """Standard error of a mean of n scores in [0, 1] (binomial bound)."""
  return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def _fmt(x: float, digits: int = 3) -> str:
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def domain_tables(record: dict) -> tuple[dict, list[str]]:
  """{domain: {method: {task: score, ..., 'avg': score, 'n': n}}} and the markdown lines."""
  from ifp_jax.data import skills

  results, variants = record["results"], record["variants"]
  methods = [m for m in METHODS if m in results]
  tables: dict = {}
  lines: list[str] = []

  def units(m: str) -> str:
    v = variants[m]
    return f"{v['ffn_units']} / {v['d_ff']}"

  for domain in skills.DOMAINS:
    names = [s.name for s in skills.SKILLS if s.domain == domain]
    tables[domain] = {}
    lines += [
      "",
      f"### Skills: {domain} (exact match; NLL = gold answer, nats/token)",
      "",
      "| method | FFN units on / per layer | "
      + " | ".join(names)
      + " | **avg** (± s.e.) | answer NLL |",
      "|---|---|" + "---|" * (len(names) + 2),
    ]
    for m in methods:
      r = results[m]["skills"]
      g, nll = r["groups"], r["answer_nll_groups"]
      dom = g[f"domain:{domain}"]
      row = {s: g[s]["score"] for s in names}
      row.update(
        avg=dom["score"],
        n=dom["n"],
        se=_se(dom["score"], dom["n"]),
        nll=nll[f"domain:{domain}"]["score"],
      )
      tables[domain][m] = row
      lines.append(
        f"| {METHODS[m][0]} | {units(m)} | "
        + " | ".join(_fmt(row[s]) for s in names)
        + f" | **{_fmt(row['avg'])}** ± {_fmt(row['se'])} | {_fmt(row['nll'])} |"
      )
  # reasoning-gym
  tasks = list(dict.fromkeys(t for m in methods for t in results[m]["math"]["groups"]))
  tables["math"] = {}
  lines += [
    "",
    "### Math: reasoning-gym (its score; held-out items)",
    "",
    "| method | FFN units on / per layer | " + " | ".join(tasks) + " | **avg** (± s.e.) | exact |",
    "|---|---|" + "---|" * (len(tasks) + 2),
  ]
  for m in methods:
    r = results[m]["math"]
    row = {t: r["groups"][t]["score"] for t in tasks}
    row.update(avg=r["score"], n=r["n"], se=_se(r["score"], r["n"]), exact=r.get("exact"))
    tables["math"][m] = row
    lines.append(
      f"| {METHODS[m][0]} | {units(m)} | "
      + " | ".join(_fmt(row[t]) for t in tasks)
      + f" | **{_fmt(row['avg'])}** ± {_fmt(row['se'])} | {_fmt(row['exact'])} |"
    )
  # held-out CPT text
  tables["text"] = {}
  lines += [
    "",
    "### Text: held-out Python stdlib files (perplexity per byte, lower is better)",
    "",
    "Measured after SFT, which trains on chat answers only: this mostly shows how "
    "much text modelling each method kept through SFT.",
    "",
    "| method | FFN units on / per layer | perplexity | rows |",
    "|---|---|---|---|",
  ]
  for m in methods:
    r = results[m]["perplexity"]
    tables["text"][m] = {"avg": r["score"], "n": r["n"]}
    lines.append(f"| {METHODS[m][0]} | {units(m)} | {_fmt(r['score'])} | {r['n']} |")
  return tables, lines


def _samples(samples_dir: pathlib.Path, variant: str, bench: str) -> list[dict]:
  return [json.loads(ln) for ln in open(samples_dir / variant / f"{bench}.jsonl") if ln.strip()]


def paired_measures(
  samples_dir: pathlib.Path, variants: list[str]
) -> dict[tuple[str, str], dict[str, list[float]]]:
  """{(domain, measure): {variant: per-example values}}, examples in the same order for every
  variant (the eval scores every variant on the same items)."""
  from ifp_jax.data import skills

  out: dict[tuple[str, str], dict[str, list[float]]] = {}
  for v in variants:
    rows = _samples(samples_dir, v, "skills")
    for domain in skills.DOMAINS:
      mine = [r for r in rows if r["domain"] == domain]
      out.setdefault((domain, "exact match"), {})[v] = [float(r["correct"]) for r in mine]
      out.setdefault((domain, "answer NLL"), {})[v] = [r["answer_nll"] for r in mine]
    out.setdefault(("math", "reasoning-gym score"), {})[v] = [
      r["score"] for r in _samples(samples_dir, v, "math")
    ]
  return out


def claim_checks(tables: dict, samples_dir: pathlib.Path) -> list[str]:
  """IFP per input vs dense-small (paired over the same eval items) and dense-full."""
  lines = [
    "",
    "## The claim, checked per domain",
    "",
    "IFP - small: mean over the same eval items of (IFP per input - dense-small), with two "
    "standard errors of that paired difference. Better = the difference exceeds 2 s.e. in "
    "the good direction (higher score, lower NLL / perplexity). Gap closed = (IFP - small) "
    "/ (full - small), shown only where dense-full beats dense-small by more than 2 s.e. "
    "(paired): without that gap the claim cannot be tested on that measure.",
    "",
    "| domain | measure | dense-small | IFP per input | dense-full | IFP - small (2 s.e.) "
    "| IFP better than dense-small? | gap closed |",
    "|---|---|---|---|---|---|---|---|",
  ]
  variants = [v for v in ("dense_small", "per_input", "dense_full") if v in tables["math"]]
  if not {"dense_small", "per_input"} <= set(variants):
    return lines + ["", "(needs the dense_small and ifp runs)"]
  import numpy as np

  for (domain, measure), vals in paired_measures(samples_dir, variants).items():
    small, ifp = np.asarray(vals["dense_small"]), np.asarray(vals["per_input"])
    full = np.asarray(vals["dense_full"]) if "dense_full" in vals else None
    diff = ifp - small
    two_se = 2 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    sign = -1.0 if measure == "answer NLL" else 1.0
    better = (
      "yes"
      if sign * diff.mean() > two_se
      else "no, worse"
      if sign * diff.mean() < -two_se
      else "within noise"
    )
    closed = "-"
    if full is not None:
      gap = full - small  # only a gap dense-full really opens can be closed
      gap_2se = 2 * gap.std(ddof=1) / np.sqrt(len(gap)) if len(gap) > 1 else float("nan")
      closed = (
        f"{diff.mean() / gap.mean():.0%}"
        if sign * gap.mean() > gap_2se
        else "n/a: dense-full not better"
      )
    lines.append(
      f"| {domain} | {measure} | {_fmt(small.mean())} | {_fmt(ifp.mean())} | "
      f"{_fmt(full.mean()) if full is not None else '-'} | {diff.mean():+.3f} "
      f"({_fmt(two_se)}) | {better} | {closed} |"
    )
  t = tables["text"]
  if {"dense_small", "per_input"} <= t.keys():
    small, ifp = t["dense_small"]["avg"], t["per_input"]["avg"]
    full = t.get("dense_full", {}).get("avg")
    closed = f"{(ifp - small) / (full - small):.0%}" if full and full < small else "-"
    lines.append(
      f"| text | perplexity | {_fmt(small)} | {_fmt(ifp)} | {_fmt(full)} | "
      f"{ifp - small:+.3f} (-) | {'lower' if ifp < small else 'higher'} | {closed} |"
    )
  return lines


def ablation_table(
  workdir: pathlib.Path, ablations: dict[str, dict], train_records: dict[str, dict]
) -> list[str]:
  """IFP per input with other settings, next to the main IFP run, paired against dense-small
  on the same eval items."""
  import numpy as np

  from ifp_jax.data import skills

  if not ablations:
    return []
  base = workdir / "eval" / "samples"
  small = paired_measures(base, ["dense_small"])
  measures = (
    [(d, "exact match") for d in skills.DOMAINS]
    + [(d, "answer NLL") for d in skills.DOMAINS]
    + [("math", "reasoning-gym score")]
  )
  head = " | ".join(
    f"{d} {'EM' if m == 'exact match' else 'NLL' if m == 'answer NLL' else ''}".strip()
    for d, m in measures
  )
  lines = [
    "",
    "## Ablations of IFP (per input)",
    "",
    "Each row retrains `ifp` from the same pretrained start with the overrides shown "
    "(`--ablation`). Cells: the measure, and in brackets the paired difference to "
    "dense-small on the same items; * = beyond 2 s.e. in IFP's favour, ! = beyond 2 s.e. "
    "against it.",
    "",
    f"| run | overrides | train s | {head} | held-out SFT loss |",
    "|---|---|---|" + "---|" * (len(measures) + 1),
  ]
  rows = [("ifp", "(main run)", base, "per_input")] + [
    (
      f"ifp_{n}",
      "; ".join(
        o
        for o in train_records[f"ifp_{n}"]["overrides"]
        if not o.startswith("model.init_from=") and o not in _overrides(f"ifp_{n}")
      ),
      workdir / f"eval_ifp_{n}" / "samples",
      "per_input",
    )
    for n in ablations
  ]
  for run, over, sdir, variant in rows:
    mine = paired_measures(sdir, [variant])
    cells = []
    for key in measures:
      x, y = np.asarray(mine[key][variant]), np.asarray(small[key]["dense_small"])
      d = x - y
      two_se = 2 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
      sign = -1.0 if key[1] == "answer NLL" else 1.0
      mark = "*" if sign * d.mean() > two_se else "!" if sign * d.mean() < -two_se else ""
      cells.append(f"{x.mean():.3f} ({d.mean():+.3f}{mark})")
    rec = train_records[run]
    lines.append(
      f"| {run} | {over or '-'} | {rec['seconds']:.0f} | "
      + " | ".join(cells)
      + f" | {_fmt((rec['stages'].get('sft') or {}).get('eval_loss_hard_masks'))} |"
    )
  return lines


# --- plots ----------------------------------------------------------------------------------
def plot_domains(tables: dict, path: pathlib.Path) -> None:
  """Left: score per domain and method; right: the skills' answer NLL per domain."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  domains = [d for d in tables if d != "text"]
  nll_domains = [d for d in domains if d != "math"]
  methods = [m for m in METHODS if all(m in tables[d] for d in domains)]
  width = 0.8 / max(1, len(methods))
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [4, 3]})
  for i, m in enumerate(methods):
    x = np.arange(len(domains)) + i * width
    ax.bar(
      x,
      [tables[d][m]["avg"] for d in domains],
      width,
      yerr=[tables[d][m]["se"] for d in domains],
      capsize=2,
      label=METHODS[m][0],
    )
    ax2.bar(
      np.arange(len(nll_domains)) + i * width,
      [tables[d][m]["nll"] for d in nll_domains],
      width,
      label=METHODS[m][0],
    )
  ax.set_xticks(np.arange(len(domains)) + width * (len(methods) - 1) / 2, domains)
  ax.set_ylabel("exact match / reasoning-gym score")
  ax.set_title("Held-out score per domain (higher is better; bars: 1 s.e.)", fontsize=9)
  ax.legend(fontsize=7, ncol=2)
  ax2.set_xticks(np.arange(len(nll_domains)) + width * (len(methods) - 1) / 2, nll_domains)
  ax2.set_ylabel("nats / answer token")
  ax2.set_title("Skills: NLL of the gold answer (lower is better)", fontsize=9)
  lo = min(tables[d][m]["nll"] for d in nll_domains for m in methods)
  hi = max(tables[d][m]["nll"] for d in nll_domains for m in methods)
  ax2.set_ylim(max(0.0, lo - 0.25 * (hi - lo + 1e-6)), hi + 0.1 * (hi - lo + 1e-6))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_losses(workdir: pathlib.Path, runs: list[str], path: pathlib.Path) -> None:
  """Training cross-entropy: dense pretraining, then the methods' CPT and SFT stages."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  pretrain = list(dict.fromkeys(PRETRAINED[r] for r in runs))
  panels = (
    ("pretraining (dense, CPT text)", pretrain, "cpt"),
    ("continued pre-training", runs, "cpt"),
    ("SFT", runs, "sft"),
  )
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
  for ax, (title, names, stage) in zip(axes, panels, strict=True):
    for r in names:
      rows = [json.loads(ln) for ln in open(workdir / r / "metrics.jsonl") if ln.strip()]
      rows = [x for x in rows if x.get("stage") == stage and "ce" in x]
      ax.plot([x["step"] for x in rows], [x["ce"] for x in rows], label=r, lw=1)
    ax.set_title(f"{title}: train CE (nats/token)", fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# --- main -----------------------------------------------------------------------------------
def machine() -> str:
  cpu = platform.processor()
  if os.path.exists("/proc/cpuinfo"):
    cpu = next(
      (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
      cpu,
    )
  import jax

  return (
    f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; "
    f"jax {jax.__version__} on {jax.devices()[0].platform}"
  )


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  runs = list(dict.fromkeys(FLAGS.runs))
  if not set(runs) <= PRETRAINED.keys() or "ifp" not in runs:
    sys.exit(f"repro: --runs must be among {sorted(PRETRAINED)} and include ifp; got {runs}")
  workdir = pathlib.Path(FLAGS.workdir).resolve()
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  limit = QUICK_LIMIT if FLAGS.quick and not FLAGS["limit"].present else FLAGS.limit
  t0 = time.perf_counter()

  train_records = {}
  for p in dict.fromkeys(PRETRAINED[r] for r in runs):
    train_records[p] = train(p, workdir)
  starts = {p: export_hf(p, workdir) for p in dict.fromkeys(PRETRAINED[r] for r in runs)}
  for r in runs:
    train_records[r] = train(r, workdir, [f"model.init_from=hf:{starts[PRETRAINED[r]]}"])
  variants = [f"baseline:{r}={workdir / r}" for r in runs if r != "ifp"] + ["per_input", "per_task"]
  record = evaluate(workdir / "ifp", workdir / "eval", variants, limit)
  ablations = {}
  for spec in FLAGS.ablation:
    name, _, over = spec.partition(":")
    run = f"ifp_{name}"
    train_records[run] = train(
      run,
      workdir,
      [f"model.init_from=hf:{starts['pretrain_full']}"]
      + [o.strip() for o in over.split(";") if o.strip()],
      config="ifp",
    )
    ablations[name] = evaluate(workdir / run, workdir / f"eval_{run}", ["per_input"], limit)
  t_total = time.perf_counter() - t0

  tables, table_lines = domain_tables(record)
  ablation_runs = [f"ifp_{n}" for n in ablations]
  train_min = sum(r["seconds"] for n, r in train_records.items() if n not in ablation_runs) / 60
  eval_min = record["seconds"] / 60
  compute_min = train_min + eval_min
  ablation_min = (
    sum(train_records[n]["seconds"] for n in ablation_runs)
    + sum(r["seconds"] for r in ablations.values())
  ) / 60
  cmd = shlex.join(["python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
  lines = [
    "# Miniature reproduction: IFPruning vs dense and static baselines",
    "",
    f"Command: `{cmd}`  ",
    f"Machine: {machine()}  ",
    f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}  ",
    f"Time: {compute_min:.1f} min end to end = training {train_min:.1f} (the "
    f"runs' own times, below) + eval {eval_min:.1f}; this invocation took "
    f"{t_total / 60:.1f} min (finished runs in --workdir are reused)."
    + (f" Ablations: {ablation_min:.1f} min more (training + eval)." if ablations else "")
    + ("  \n**--quick smoke run: the numbers mean nothing.**" if FLAGS.quick else ""),
    "",
    "Setup: configs/repro/common.py (byte-level Llama, 4 layers x 128, F = "
    f"{record['variants']['per_input']['d_ff']} FFN units per layer, k = "
    f"{record['variants']['per_input']['ffn_units']} kept). The two pretraining runs "
    "read the same CPT batches for the same steps; so do the four method runs (another "
    "data order), CPT then SFT: one token budget.",
    "",
    "## Training runs",
    "",
    "| run | config | starts from | steps (cpt + sft) | train time (s) | final CPT loss "
    "| held-out CPT loss after CPT | final SFT loss | held-out SFT loss (hard masks) "
    "| held-out CPT text loss after SFT |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r, rec in train_records.items():
    cpt, sft = rec["stages"].get("cpt") or {}, rec["stages"].get("sft") or {}
    n_cpt = cpt.get("last_step", 0)
    n_sft = sft["last_step"] - n_cpt if sft else 0
    start = "random init" if r in PRETRAINED.values() else PRETRAINED.get(r, "pretrain_full")
    config = r if r in PRETRAINED or r in PRETRAINED.values() else "ifp"  # ablations: ifp
    lines.append(
      f"| {r} | configs/repro/{config}.py | {start} | {n_cpt} + {n_sft} | "
      f"{rec['seconds']:.0f} | {_fmt(cpt.get('last_loss'))} | {_fmt(cpt.get('heldout_loss'))} | "
      f"{_fmt(sft.get('last_loss'))} | {_fmt(sft.get('eval_loss_hard_masks'))} | "
      f"{_fmt(sft.get('heldout_text_loss'))} |"
    )
  lines += [
    "",
    "Losses are nats per byte; held-out losses use hard masks (IFP: per input, the predictor "
    "reading each chunk's preceding text). The CPT text columns test the claim on language "
    "modelling: after CPT, IFP should land between dense-small and dense-full.",
  ]
  lines += ["", "## Held-out scores per domain (the shape of the paper's Tables 1-2)"]
  lines += table_lines + claim_checks(tables, workdir / "eval" / "samples")
  lines += ablation_table(workdir, ablations, train_records)
  ma = (record.get("mask_analysis") or {}).get("summary")
  if ma:
    lines += [
      "",
      "## IFP masks",
      "",
      f"Mean overlap |A & B| / k of per-input masks: within a domain "
      f"{_fmt(sum(ma['within_domain_overlap']) / ma['layers'])}, across domains "
      f"{_fmt(sum(ma['cross_domain_overlap']) / ma['layers'])} (random masks: "
      f"{_fmt(ma['random_overlap'])}); heatmaps per layer in mask_overlap.png, "
      "per-layer usage in mask_layers.png.",
    ]
  lines += [
    "",
    "Files: results.json, domains.png, loss_curves.png, mask_overlap.png, "
    "mask_layers.png, eval_results.md (the full eval report).",
  ]
  text = "\n".join(lines) + "\n"
  (out / "results.md").write_text(text)
  results = {
    "command": cmd,
    "machine": machine(),
    "seconds": round(t_total, 1),
    "train": train_records,
    "tables": tables,
    "eval": {k: record[k] for k in ("settings", "variants", "results")},
    "ablations": {
      n: {"train": train_records[f"ifp_{n}"], "results": r["results"]} for n, r in ablations.items()
    },
    "mask_analysis": ma,
  }
  (out / "results.json").write_text(json.dumps(results, indent=2))
  if FLAGS.json:  # the same record (results.json is always written to --out)
    pathlib.Path(FLAGS.json).write_text(json.dumps(dict(benchmark="repro", **results), indent=2))
  plot_domains(tables, out / "domains.png")
  plot_losses(workdir, runs, out / "loss_curves.png")
  eval_dir = workdir / "eval"
  for name in ("mask_overlap.png", "mask_layers.png"):
    if (eval_dir / name).exists():
      shutil.copy(eval_dir / name, out / name)
  shutil.copy(eval_dir / "results.md", out / "eval_results.md")
  print(text)
  print(f"[repro] {t_total / 60:.1f} min; results in {out}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
