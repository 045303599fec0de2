"""benchmarks/repro_smollm2.py --quick end to end on real SmolLM2 weights (slow: minutes)."""

import json
import math
import pathlib
import subprocess
import sys

import pytest
import train_utils as tu

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_run_covers_training_free_and_regime_a(tmp_path):
  out, work = tmp_path / "out", tmp_path / "runs"
  cmd = [
    sys.executable,
    str(ROOT / "benchmarks" / "repro_smollm2.py"),
    "--quick",
    "--domains=code,math",
    "--stages=training_free,regime_a",
    "--train_steps=2",
    "--n_train=4",
    "--trained=static_domain_tables,ifp_centred,ifp_pertask",
    f"--workdir={work}",
    f"--out={out}",
  ]
  env = tu.cli_env(runtime_bound=True)  # real weights: bound by running them
  subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1800)
  record = json.loads((out / "results.json").read_text())
  want = {"full", "random", "calib_static", "griffin", "griffin_dense_prefill"}
  want |= {"calib_domain", "griffin_oracle"}
  # One static table per domain (a run each), and the centred, GRIFFIN-distilled IFP.
  want |= {"a_static_domain_tables", "a_ifp_centred_input", "a_ifp_centred_task"}
  want |= {"a_ifp_centred_bias", "a_ifp_centred_mean"}
  want |= {"a_ifp_pertask_task", "a_ifp_pertask_taskmean"}  # reads only the task sentence
  for d in ("code", "math"):
    row = record["summary"][d]
    assert set(row["ppl"]) == want
    assert all(math.isfinite(v) and v > 1 for v in row["ppl"].values())
    # A random third of the units is far worse than the full model on real weights.
    assert row["nll"]["random"] > row["nll"]["full"] + 0.5
    assert "griffin-calib_static" in row["paired"]
  runs = record["regime_a"]["runs"]
  tables = runs["static_domain_tables"]
  assert set(tables) == {"code", "math", "cross_nll", "table_overlap"}
  assert len(tables["cross_nll"]["code"]["math"]) == 3  # code's table on math's documents
  assert "| table / scored | code | math |" in (out / "results.md").read_text()
  assert runs["static_domain_tables"]["code"]["workdir"].endswith("a_static_domain_tables_code")
  run = runs["ifp_centred"]
  overlap = run["mask_overlap"]["code"]
  assert 0 < overlap["doc_vs_doc"] <= 1 and 0 < overlap["vs_bias_only"] <= 1
  between = run["mask_overlap_between_domains"]
  assert set(between) == {"code|math", "all"} and 0 < between["code|math"] <= 1
  # The distillation read --distill_rows (the quick preset's 10) and measured its held-out fit.
  assert run["warm_start"]["kind"] == "griffin" and run["warm_start"]["inputs"] == 10
  assert 0 < run["warm_start"]["heldout_overlap"] <= 1
  page = (out / "results.md").read_text()
  assert page.count("| code |") >= 3 and "| ifp_centred | 10 |" in page
  assert "a_ifp_centred_input better than" in page or "better than a_ifp_centred_input" in page
  for png in ("domains.png", "overlap.png", "per_input.png"):
    assert (out / png).stat().st_size > 1000
  # The per-task run trained on SFT records: the task sentence, then the document.
  first = json.loads((work / "train_tasks.jsonl").read_text().splitlines()[0])
  assert first["prompt"] == "Continue the Python source file." and first["response"]
  assert runs["ifp_pertask"]["warm_start"]["kind"] == "griffin"
  # Run again: every score comes from the record (same documents, runs and steps), unchanged.
  log = subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=600, capture_output=True)
  assert b"training-free scores reused" in log.stdout
  assert b"[math] a_ifp_pertask_task: reused (same run and step)" in log.stdout
  assert b"[code] a_static_domain_tables: reused (same run and step)" in log.stdout
  second = json.loads((out / "results.json").read_text())
  assert second["training_free"]["nll"] == record["training_free"]["nll"]


def test_variant_tables_are_consistent():
  """Every trained run scores variants the page knows, once each; plotted bars are variants."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import repro_smollm2 as r

  assert len(set(r.VARIANTS)) == len(r.VARIANTS)
  assert len(set(r.PLOTTED)) == len(r.PLOTTED) and set(r.PLOTTED) <= set(r.VARIANTS)
  assert set(r.TRAINED) == set(r.TRAINED_NAMES)
  scored = [v for names in r.TRAINED.values() for v in names]
  assert len(set(scored)) == len(scored) and set(scored) <= set(r.VARIANTS)
  assert set(r.TRAINING_FREE).isdisjoint(scored)
  for a, b in r.VERDICT_PAIRS:
    assert a in r.VARIANTS and b in r.VARIANTS, (a, b)
  for name in r.TRAINED_NAMES:
    assert (ROOT / "configs" / "repro_smollm2" / f"{name}.py").is_file(), name
  # The LR sweep plot's axis is the configs' LR.
  import importlib

  for variant, lr in r.LR_SWEEP.items():
    (name,) = [n for n, vs in r.TRAINED.items() if variant in vs]
    config = importlib.import_module(f"configs.repro_smollm2.{name}").get_config("docs.jsonl")
    assert config.cpt.predictor_lr == lr, variant
