"""Eval outputs: results.json (the record), results.md (tables) and PNG bar charts.

results.json layout:
  {"workdir", "step", "created", "seconds", "settings": {benchmarks, limits, instructions, ...},
   "variants": {name: {workdir, step, mode, mask_kind, ffn_units, d_ff, tokenizer}},
   "results": {variant: {result name: {metric, score, n, groups: {g: {score, n}}, seconds, ...}}},
   "mask_analysis": {files, summary} | {"skipped": why}}
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping

import numpy as np


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    if math.isnan(v):
      return "n/a"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
  return str(v)


def result_names(record: Mapping[str, Any]) -> list[str]:
  names: dict[str, None] = {}
  for per_variant in record["results"].values():
    names.update(dict.fromkeys(per_variant))
  return list(names)


def markdown(record: Mapping[str, Any]) -> str:
  variants, results = record["variants"], record["results"]
  names = result_names(record)
  lines = [
    f"# Eval of {record['workdir']} (step {record['step']})",
    "",
    f"{record['created']}, {record['seconds']:.0f} s. Scores: higher is better except "
    f"perplexity. n = samples scored.",
    "",
    "## Variants",
    "",
    "| variant | run | step | mode | mask kind | FFN units / layer |",
    "|---|---|---|---|---|---|",
  ]
  for name, v in variants.items():
    lines.append(
      f"| {name} | {v['workdir']} | {v['step']} | {v['mode']} | {v['mask_kind']} | "
      f"{v['ffn_units']} of {v['d_ff']} |"
    )
  lines += [
    "",
    "## Scores",
    "",
    "| variant | " + " | ".join(f"{n} ({_metric(results, n)})" for n in names) + " |",
    "|---|" + "---|" * len(names),
  ]
  for var, per in results.items():
    cells = [f"{_fmt(per[n]['score'])} (n={per[n]['n']})" if n in per else "-" for n in names]
    lines.append(f"| {var} | " + " | ".join(cells) + " |")
  for n in names:
    # "groups" holds the benchmark's score per group; other "<measure>_groups" fields (e.g. the
    # skills' answer_nll_groups) get a table each.
    keys = list(
      dict.fromkeys(
        k
        for per in results.values()
        if n in per
        for k in per[n]
        if k == "groups" or k.endswith("_groups")
      )
    )
    for key in keys:
      groups = list(
        dict.fromkeys(g for per in results.values() if n in per for g in per[n].get(key, {}))
      )
      if not groups:
        continue
      title = f"{n} by group" if key == "groups" else f"{n} {key[: -len('_groups')]} by group"
      lines += [
        "",
        f"### {title}",
        "",
        "| variant | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
      ]
      for var, per in results.items():
        if n in per:
          g = per[n].get(key, {})
          lines.append(
            f"| {var} | "
            + " | ".join(f"{_fmt(g[x]['score'])} ({g[x]['n']})" if x in g else "-" for x in groups)
            + " |"
          )
  ma = record.get("mask_analysis") or {}
  if ma.get("summary"):
    s = ma["summary"]
    lines += [
      "",
      "## Mask analysis",
      "",
      f"Domains: {', '.join(s['domains'])} (prompts: {s['prompts']}); k={s['k']} of "
      f"{s['d_ff']} (random masks overlap ~{s['random_overlap']:.3f}). Files: "
      f"{', '.join(pathlib.Path(p).name for p in ma['files'].values())}.",
      "",
      "| layer | within-domain overlap | cross-domain overlap | unit entropy (bits) | "
      "usage entropy | never selected |",
      "|---|---|---|---|---|---|",
    ]
    for i in range(s["layers"]):
      lines.append(
        f"| {i} | {_fmt(s['within_domain_overlap'][i])} | "
        f"{_fmt(s['cross_domain_overlap'][i])} | {_fmt(s['binary_entropy'][i])} | "
        f"{_fmt(s['usage_entropy'][i])} | {s['never_selected'][i]} |"
      )
  elif ma.get("skipped"):
    lines += ["", "## Mask analysis", "", f"Skipped: {ma['skipped']}"]
  return "\n".join(lines) + "\n"


def _metric(results: Mapping[str, Any], name: str) -> str:
  for per in results.values():
    if name in per:
      return per[name]["metric"]
  return ""


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_scores(record: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path:
  """One panel per result: a bar per variant."""
  plt = _plt()
  names, results = result_names(record), record["results"]
  variants = list(results)
  cols = min(3, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax in axes.ravel()[len(names) :]:
    ax.axis("off")
  for ax, n in zip(axes.ravel(), names):
    vals = [results[v][n]["score"] if n in results[v] else np.nan for v in variants]
    bars = ax.bar(
      range(len(variants)), vals, color=[colors[i % len(colors)] for i in range(len(variants))]
    )
    ax.bar_label(bars, labels=[_fmt(v) for v in vals], fontsize=7)
    top = np.nanmax(vals) if not np.isnan(vals).all() else 0
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{n} ({_metric(results, n)})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_groups(record: Mapping[str, Any], name: str, path: pathlib.Path) -> pathlib.Path:
  """Grouped bars: x = groups of result `name`, one bar per variant."""
  plt = _plt()
  results = record["results"]
  variants = [v for v in results if name in results[v]]
  groups = list(dict.fromkeys(g for v in variants for g in results[v][name]["groups"]))
  width = 0.8 / max(len(variants), 1)
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * max(1, len(variants) / 2)), 3.6))
  for i, v in enumerate(variants):
    g = results[v][name]["groups"]
    ax.bar(
      np.arange(len(groups)) + i * width,
      [g[x]["score"] if x in g else np.nan for x in groups],
      width,
      label=v,
    )
  ax.set_xticks(
    np.arange(len(groups)) + width * (len(variants) - 1) / 2,
    groups,
    rotation=45,
    ha="right",
    fontsize=8,
  )
  ax.set_ylim(bottom=0)
  ax.set_ylabel(_metric(results, name))
  ax.set_title(f"{name} by group")
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write(record: dict[str, Any], out_dir: pathlib.Path) -> dict[str, str]:
  """results.json, results.md, scores.png and groups_<name>.png in `out_dir`."""
  out_dir.mkdir(parents=True, exist_ok=True)
  files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
  if record["results"] and result_names(record):
    files["scores_png"] = plot_scores(record, out_dir / "scores.png")
    for n in result_names(record):
      if any(per.get(n, {}).get("groups") for per in record["results"].values()):
        files[f"groups_{n}_png"] = plot_groups(record, n, out_dir / f"groups_{n}.png")
  record["files"] = {k: str(v) for k, v in files.items()}
  tmp = files["json"].with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=1, allow_nan=True))
  tmp.replace(files["json"])
  files["markdown"].write_text(markdown(record))
  return record["files"]
