"""The benchmark scripts run end to end (--quick), and the torch peer computes our model.

Speed is not checked here (benchmarks print ratios; tests check behaviour): the train benchmark
must report the same first-step loss for our IFP step and the PyTorch peer built from our
weights (same predictor, same soft top-k masks), and the inference benchmark must get through
predictor -> gather -> generate for every variant and print its ratio table.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, as the benchmarks run
  proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def test_train_throughput_torch_peer_matches_our_loss():
  out = _run("train_throughput.py", "--variants=jax_ifp,torch_ifp", "--rounds=1", "--steps=1")
  match = re.search(r"first-step loss \(same weights, same batch\): jax_ifp ([\d.]+), "
                    r"torch_ifp ([\d.]+)", out)
  assert match, out
  ours, peer = float(match.group(1)), float(match.group(2))
  assert abs(ours - peer) < 1e-3 * max(1.0, abs(ours)), (ours, peer)
  assert re.search(r"\| jax_ifp \| \d+ \| \d+ \|", out), out
  assert "ours / torch, IFP" in out


def test_inference_bench_runs_every_variant():
  out = _run("inference_bench.py", "--rounds=1", "--nomasked")
  for row in ("full", "pruned", "dense_k"):
    assert re.search(rf"\| {row} \| \d+ \|", out), out
  assert "pruned / dense_k decode tokens/s" in out
  assert "| masked |" not in out
