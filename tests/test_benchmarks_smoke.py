"""The benchmark scripts run end to end (--quick), and the torch peer computes our model.

Speed is not checked here (benchmarks print ratios; tests check behaviour): the train benchmark
must report the same first-step loss for our IFP step and the PyTorch peer built from our
weights (same predictor, same soft top-k masks), and the inference benchmark must get through
predictor -> gather -> generate for every variant and print its ratio table.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest
import train_utils as tu

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, runtime_bound: bool = False) -> str:
  # One CPU device, as the benchmarks run. runtime_bound: train_utils.xla_flags (-O1 made
  # core_bench --quick 65 -> 36 s and inference_bench 54 -> 38 s; the others gain nothing).
  env = tu.cli_env(runtime_bound=runtime_bound)
  proc = subprocess.run(
    [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def test_train_throughput_torch_peer_matches_our_loss(tmp_path):
  out = _run(
    "train_throughput.py",
    "--variants=jax_ifp,torch_ifp,jax_ifp_autodiff_ffn",
    "--rounds=1",
    "--steps=1",
    f"--json={tmp_path / 'train.json'}",
  )
  match = re.search(
    r"first-step loss \(same weights, same batch\): jax_ifp ([\d.]+), "
    r"torch_ifp ([\d.]+)",
    out,
  )
  assert match, out
  ours, peer = float(match.group(1)), float(match.group(2))
  assert abs(ours - peer) < 1e-3 * max(1.0, abs(ours)), (ours, peer)
  assert re.search(r"\| jax_ifp \| \d+ \| \d+ \|", out), out
  assert "ours / torch, IFP" in out
  rec = json.loads((tmp_path / "train.json").read_text())
  assert rec["benchmark"] == "train_throughput"
  assert set(rec["variants"]) == {"jax_ifp", "torch_ifp", "jax_ifp_autodiff_ffn"}
  # The table prints 5 decimals; the JSON keeps the full value.
  assert abs(rec["variants"]["jax_ifp"]["first_step_loss"] - ours) < 1e-5
  assert rec["ratios"]["ours_over_torch_ifp"] > 0 and rec["ratios"]["ours_over_torch_dense"] is None
  assert 0 < rec["variants"]["jax_ifp"]["mfu"] < 1
  # The FFN's autodiff backward (model/swiglu.py's reference) trains the same model.
  assert abs(rec["variants"]["jax_ifp_autodiff_ffn"]["first_step_loss"] - ours) < 1e-5
  assert rec["ratios"]["custom_vjp_ffn_over_autodiff_ifp"] > 0


def test_inference_bench_runs_every_variant(tmp_path):
  out = _run(
    "inference_bench.py",
    "--rounds=1",
    "--nomasked",
    f"--json={tmp_path / 'inf.json'}",
    runtime_bound=True,
  )
  for row in ("full", "pruned", "dense_k"):
    assert re.search(rf"\| {row} \| \d+ \|", out), out
  assert "pruned / dense_k decode tokens/s" in out
  assert "| masked |" not in out
  rec = json.loads((tmp_path / "inf.json").read_text())
  assert set(rec["variants"]) == {"full", "pruned", "dense_k", "hf_full", "hf_pruned"}
  for key in (  # the PyTorch peer, timed in the same rounds
    "full_over_transformers_full_decode_tokens_s",
    "transformers_full_ttft_over_full_ttft",
    "pruned_over_transformers_pruned_decode_tokens_s",
    "transformers_pruned_ttft_over_pruned_model_ttft_no_predictor",
  ):
    assert rec["ratios"][key] > 0, key
  table = re.search(r"\| pruned / dense_k decode tokens/s \| ([\d.]+) \|", out).group(1)
  assert f"{rec['ratios']['pruned_over_dense_k_decode_tokens_s']:.3f}" == table
  assert all(v["decode_tokens_per_s"] > 0 for v in rec["variants"].values())


def test_allocator_ab_children_run_under_the_allocator_they_asked_for(tmp_path):
  """Each child checks its own allocator (else the script fails); mimalloc, which keeps
  freed pages, must fault in fewer pages per step than glibc, which unmaps large blocks."""
  _run("allocator_ab.py", f"--json={tmp_path / 'alloc.json'}")
  rec = json.loads((tmp_path / "alloc.json").read_text())
  faults = {a: rec["allocators"][a]["minor_faults_per_step"] for a in ("mimalloc", "system")}
  assert faults["mimalloc"] < faults["system"], faults
  assert rec["ratios"]["mimalloc_over_system_step_speed"] > 0


def test_eval_bench_one_pass_matches_per_letter(tmp_path):
  out = _run("eval_bench.py", "--per_group=1", f"--json={tmp_path / 'eval.json'}")
  rec = json.loads((tmp_path / "eval.json").read_text())
  row = rec["shots"]["0"]
  assert rec["benchmark"] == "eval_bench" and rec["questions"] == 7
  assert row["same_predictions"] and row["max_abs_loglik_diff"] < 1e-4
  assert row["one_pass_questions_per_s"] > 0 and row["per_letter_questions_per_s"] > 0
  assert f"| 0 | {row['tokens_per_question']:.0f} |" in out


def test_core_bench_writes_json(tmp_path):
  _run("core_bench.py", "--reps=1", f"--json={tmp_path / 'core.json'}", runtime_bound=True)
  rec = json.loads((tmp_path / "core.json").read_text())
  assert set(rec["ratios"]) == {
    "soft_topk_over_train_step",
    "predictor_gather_over_prefill",
    "jitted_chain_over_prefill",
  }
  assert all(v > 0 for v in rec["ms"].values()) and len(rec["ms"]) == 6


def test_sft_packing_bench_measures_both_layouts(tmp_path, tmp_path_factory):
  from train_utils import shared_data_dir

  out = _run(
    "sft_packing.py",
    f"--data_dir={shared_data_dir(tmp_path_factory)}",
    f"--json={tmp_path / 'pack.json'}",
  )
  rec = json.loads((tmp_path / "pack.json").read_text())
  assert rec["benchmark"] == "sft_packing" and rec["pack"] == 4
  # The tiny job's SFT rows (skills + 1 in 5 replayed text rows): packing fills them.
  assert 0 < rec["real_frac_unpacked"] < rec["real_frac_packed"] <= 1
  assert rec["step_s_packed"] > 0 and rec["real_tokens_per_s_packed"] > 0
  assert "| real tokens/s |" in out


def test_repro_quick_trains_every_method_and_writes_the_tables(tmp_path):
  """The reproduction's plumbing end to end on a few steps: pretraining, HF export, the four
  method runs from their pretrained starts, the eval, per-domain tables and the claim checks."""
  work, out = tmp_path / "work", tmp_path / "out"
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "benchmarks" / "repro.py"),
      "--quick",
      f"--workdir={work}",
      f"--out={out}",
      f"--json={tmp_path / 'repro.json'}",
    ],
    cwd=ROOT,
    env=tu.cli_env(),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  md = (out / "results.md").read_text()
  for label in (
    "dense-full (d_ff = F)",
    "dense-small (d_ff = k)",
    "static pruning F -> k",
    "IFP F -> k, per input",
    "IFP F -> k, per task",
  ):
    assert md.count(f"| {label} |") == 5, label  # 3 skill domains + math + text
  for row in ("| arithmetic |", "| strings |", "| code |", "| math |"):
    assert row in md  # the claim check, one row per domain
  rec = json.loads((out / "results.json").read_text())
  assert json.loads((tmp_path / "repro.json").read_text()) == dict(benchmark="repro", **rec)
  assert set(rec["train"]) == {
    "pretrain_full",
    "pretrain_small",
    "dense_full",
    "dense_small",
    "static",
    "ifp",
  }
  v = rec["eval"]["variants"]
  assert (v["dense_full"]["ffn_units"], v["dense_small"]["ffn_units"]) == (512, 128)
  assert v["per_input"]["ffn_units"] == v["static"]["ffn_units"] == 128
  # Method runs start from the exported pretrained dense runs.
  cfg = json.loads((work / "ifp" / "config.json").read_text())
  assert cfg["model"]["init_from"] == f"hf:{work / 'pretrain_full' / 'hf'}"
  for f in ("domains.png", "loss_curves.png", "mask_overlap.png"):
    assert (out / f).read_bytes()[:4] == b"\x89PNG"
  # A second call reuses the finished runs and the eval, and adds an IFP ablation.
  again = subprocess.run(
    [
      sys.executable,
      str(ROOT / "benchmarks" / "repro.py"),
      "--quick",
      f"--workdir={work}",
      f"--out={out}",
      "--ablation=soft:model.eps=0.5",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env=tu.cli_env(),
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("reusing the finished run") == 6
  assert "reusing the eval" in again.stdout and "training ifp_soft" in again.stdout
  md = (out / "results.md").read_text()
  assert "## Ablations of IFP (per input)" in md and "| ifp_soft | model.eps=0.5 |" in md
  cfg = json.loads((work / "ifp_soft" / "config.json").read_text())
  assert cfg["model"]["eps"] == 0.5 and cfg["model"]["mask_kind"] == "soft_topk"
