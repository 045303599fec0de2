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
    "--trained=static_domain_tables,ifp_frozen,ifp_pertask_frozen",
    f"--workdir={work}",
    f"--out={out}",
  ]
  env = tu.cli_env(runtime_bound=True)  # real weights: bound by running them
  subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=1800)
  record = json.loads((out / "results.json").read_text())
  want = {"full", "random", "calib_static", "griffin", "griffin_dense_prefill"}
  want |= {"calib_domain", "griffin_oracle"}
  # One static table per domain (a run each), and the centred, GRIFFIN-distilled IFP with its
  # trunk frozen, per input and per task (reads only the task sentence).
  want |= {"a_static_domain_tables", "a_ifp_frozen_input", "a_ifp_frozen_task"}
  want |= {"a_ifp_frozen_mean", "a_ifp_pertask_frozen_task", "a_ifp_pertask_frozen_taskmean"}
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
  run = runs["ifp_frozen"]
  overlap = run["mask_overlap"]["code"]
  assert 0 < overlap["doc_vs_doc"] <= 1 and 0 < overlap["vs_bias_only"] <= 1
  between = run["mask_overlap_between_domains"]
  assert set(between) == {"code|math", "all"} and 0 < between["code|math"] <= 1
  # The distillation read --distill_rows (the quick preset's 10) and measured its held-out fit.
  assert run["warm_start"]["kind"] == "griffin" and run["warm_start"]["inputs"] == 10
  assert 0 < run["warm_start"]["heldout_overlap"] <= 1
  page = (out / "results.md").read_text()
  assert page.count("| code |") >= 3 and "| ifp_frozen | 10 |" in page
  assert "a_ifp_frozen_input better than" in page or "better than a_ifp_frozen_input" in page
  for png in ("domains.png", "overlap.png", "per_input.png"):
    assert (out / png).stat().st_size > 1000
  # The per-task run trained on SFT records: the task sentence, then the document.
  first = json.loads((work / "train_tasks.jsonl").read_text().splitlines()[0])
  assert first["prompt"] == "Continue the Python source file." and first["response"]
  assert runs["ifp_pertask_frozen"]["warm_start"]["kind"] == "griffin"
  # --calib_rows (the quick preset's 8) bounds the calibration start of the domain tables.
  assert "over 8 cpt rows" in (work / "a_static_domain_tables_code" / "train.log").read_text()
  # Only the head's output layer trained: its trunk is the GRIFFIN-distilled start's.
  assert "predictor_trunk" in (work / "a_ifp_frozen" / "config.json").read_text()
  # Run again: every score comes from the record (same documents, runs and steps), unchanged;
  # the per-task run is not re-scored but carried over from the record.
  again = [a for a in cmd if not a.startswith("--trained=")]
  again += ["--trained=static_domain_tables,ifp_frozen", "--carry_over=ifp_pertask_frozen"]
  log = subprocess.run(again, cwd=ROOT, env=env, check=True, timeout=600, capture_output=True)
  assert b"training-free scores reused" in log.stdout
  assert b"[math] a_ifp_frozen_input: reused (same run and step)" in log.stdout
  assert b"[code] a_static_domain_tables: reused (same run and step)" in log.stdout
  assert b"ifp_pertask_frozen: scores carried over from the previous record" in log.stdout
  second = json.loads((out / "results.json").read_text())
  assert second["training_free"]["nll"] == record["training_free"]["nll"]
  assert second["regime_a"]["runs"]["ifp_pertask_frozen"]["carried_over"] is True
  assert "(--carry_over): ifp_pertask_frozen;" in (out / "results.md").read_text()


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
