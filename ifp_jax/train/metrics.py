"""Training observability: metrics.jsonl, TensorBoard events, a progress line, loss-curve PNG."""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any


def _summary_writer(logdir: pathlib.Path):
  """tensorboardX's SummaryWriter, imported without torch when torch is not loaded yet:
  tensorboardX imports torch only to accept torch tensors (we log floats), and that import is
  ~3 s of every training job's start on 2 cores."""
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
  try:
    from tensorboardX import SummaryWriter
  finally:
    if block:
      del sys.modules["torch"]
  return SummaryWriter(str(logdir))


class MetricsLogger:
  """Writes one JSON object per logged step and prints `stage step/total loss tok/s ETA`."""

  def __init__(self, workdir: pathlib.Path, enabled: bool = True, stream=sys.stderr):
    self.enabled = enabled
    self.stream = stream
    self._history: dict[str, list[dict[str, Any]]] = {}
    self._stage, self._total, self._t0 = None, 0, time.perf_counter()
    if enabled:
      from ifp_jax.train.run_files import repair_jsonl

      repair_jsonl(pathlib.Path(workdir) / "metrics.jsonl")  # a kill mid-write leaves half a line
      self._file = open(pathlib.Path(workdir) / "metrics.jsonl", "a")
      try:
        self._tb = _summary_writer(pathlib.Path(workdir) / "tensorboard")
      except ImportError:  # optional: metrics.jsonl is the source of truth
        self._tb = None

  def start_stage(self, stage: str, steps: int) -> None:
    self._stage, self._total, self._done, self._t0 = stage, steps, 0, time.perf_counter()

  def log(self, metrics: dict[str, Any], remaining: int) -> None:
    self._history.setdefault(metrics["stage"], []).append(metrics)
    if not self.enabled:
      return
    self._file.write(json.dumps(metrics) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        if isinstance(v, (int, float)) and k != "step":
          self._tb.add_scalar(f"{metrics['stage']}/{k}", v, metrics["step"])
    done = self._total - remaining
    elapsed = time.perf_counter() - self._t0
    eta = elapsed / max(done, 1) * remaining
    extra = ""
    real = ""
    if "real_tokens_per_sec" in metrics:
      real = f" ({metrics['real_tokens_per_sec']:.0f} real)"
    if "mask_kept_frac" in metrics:
      extra += f" kept {metrics['mask_kept_frac']:.3f}"
    if "expected_sparsity" in metrics:
      extra += (
        f" E[sparsity] {metrics['expected_sparsity']:.3f}"
        f" (target {metrics['target_sparsity']:.3f}) l1 {metrics['lambda1']:+.3f}"
      )
    if "heldout_loss" in metrics:
      extra += f" held-out {metrics['heldout_loss']:.4f}"
    if "heldout_text_loss" in metrics:
      extra += f" held-out text {metrics['heldout_text_loss']:.4f}"
    print(
      f"[{metrics['stage']}] step {metrics['step']} ({done}/{self._total}) "
      f"loss {metrics['loss']:.4f} {metrics['tokens_per_sec']:.0f} tok/s{real}{extra} "
      f"ETA {_fmt(eta)}",
      file=self.stream,
      flush=True,
    )

  def last_row(self, stage: str) -> dict[str, Any]:
    rows = self._history.get(stage, [])
    return rows[-1] if rows else {}

  def stage_summary(self, stage: str) -> dict[str, Any]:
    rows = self._history.get(stage, [])
    if not rows:
      return {}
    out = {
      "first_loss": rows[0]["loss"],
      "last_loss": rows[-1]["loss"],
      "first_step": rows[0]["step"],
      "last_step": rows[-1]["step"],
    }
    for key in ("mask_kept_frac", "expected_sparsity", "lambda1", "lambda2"):
      if key in rows[-1]:
        out[key] = rows[-1][key]
    return out

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def _fmt(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 60}m{seconds % 60:02d}s"


def plot_loss_curves(metrics_file: pathlib.Path, out_png: pathlib.Path) -> pathlib.Path | None:
  """Training loss per stage against the global step, with the held-out losses as markers,
  from metrics.jsonl."""
  if not pathlib.Path(metrics_file).exists():
    return None
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from ifp_jax.train.run_files import read_jsonl

  rows = read_jsonl(metrics_file)
  fig, ax = plt.subplots(figsize=(7, 4))
  for stage in dict.fromkeys(r["stage"] for r in rows):
    pts = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage]
    line = ax.plot(*zip(*pts), label=f"{stage} train")[0]
    for key, marker, what in (("heldout_loss", "o", "held-out"), ("heldout_text_loss", "s", "")):
      held = [(r["step"], r[key]) for r in rows if r["stage"] == stage and key in r]
      if held:
        label = f"{stage} {what}" if what else f"{stage}: held-out CPT text"
        ax.plot(*zip(*held), marker, color=line.get_color(), label=label, mfc="none")
  ax.set_xlabel("step")
  ax.set_ylabel("loss (CE on loss tokens)")
  ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_png, dpi=120)
  plt.close(fig)
  return pathlib.Path(out_png)
