"""Shared helpers of the training acceptance tests (tests/test_train_*.py).

Small runs of `configs/tiny.py` (2 layers, seq_len 64, batch 8, log every step) on a shared TFDS
data dir, metrics.jsonl readers, and bounded `launch.train` subprocesses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Mapping

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]

# Overrides of configs/tiny.py that keep a run to seconds on 2 CPU cores. Shapes still divide
# every 8-device mesh of the tests (heads 4, kv heads 2, d_ff 384, vocab 384, embed 128).
SMALL: dict[str, Any] = {
  "data.cpt.sources.stdlib.options.max_files": 20,
  "data.max_prompt_len": 32,
  "model.llm.num_hidden_layers": 2,
  "train.seq_len": 64,
  "train.batch_size": 8,
  "train.log_every": 1,
  "train.eval_rows": 0,
  "train.checkpoint_every": 1000,
  "cpt.steps": 4,
  "sft.steps": 0,
  "cpt.warmup_steps": 0,  # LR > 0 from the first step: later losses depend on the updates
  "sft.warmup_steps": 0,
}


def shared_data_dir(tmp_path_factory) -> str:
  """One TFDS dir per pytest session (built by the first run that needs it, then reused)."""
  path = tmp_path_factory.getbasetemp() / "train_tfds"
  path.mkdir(exist_ok=True)
  return str(path)


def set_path(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def small_config(data_dir: str, **overrides: Any) -> ml_collections.ConfigDict:
  """configs/tiny.py + SMALL + overrides (keys are dotted paths written with '__' for '.')."""
  spec = importlib.util.spec_from_file_location("_tiny_config", REPO / "configs" / "tiny.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = data_dir
  for key, value in {**SMALL, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
    set_path(config, key, value)
  return config


def cli_flags(data_dir: str, **overrides: Any) -> list[str]:
  """The same run as `small_config(data_dir, **overrides)` as launch.train flags."""
  items = {
    "data.data_dir": data_dir,
    **SMALL,
    **{k.replace("__", "."): v for k, v in overrides.items()},
  }
  return [f"--config.{k}={v}" for k, v in items.items()]


def read_metrics(workdir: str | pathlib.Path) -> dict[int, dict[str, Any]]:
  """metrics.jsonl rows by step; a step logged twice (re-run after a resume) keeps the last."""
  rows: dict[int, dict[str, Any]] = {}
  with open(pathlib.Path(workdir) / "metrics.jsonl") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows[int(row["step"])] = row
  return rows


def assert_close_rel(a: float, b: float, rtol: float, what: str) -> None:
  assert abs(a - b) <= rtol * max(abs(a), abs(b)), f"{what}: {a!r} vs {b!r} (rtol {rtol})"


def xla_flags(num_devices: int | None = None, runtime_bound: bool = False) -> str:
  """XLA_FLAGS for a process a test launches: the session's compile-speed flags (conftest.py)
  and, when given, a fake CPU device count (None: one device, as users run the CLIs).

  `runtime_bound=True` for a process that runs long rather than compiles much (hundreds of
  steps, or real weights): the session's -O0 code runs slowly, so it gets conftest.py's -O1
  set, which compiles nearly as fast and runs as fast as the default flags.
  """
  var = "IFP_JAX_TEST_RUNTIME_XLA_FLAGS" if runtime_bound else "IFP_JAX_TEST_XLA_FLAGS"
  flags = os.environ.get(var, "").split()
  if num_devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={num_devices}")
  return " ".join(flags)


def cli_env(runtime_bound: bool = False, **extra: str) -> dict[str, str]:
  """os.environ for a one-device subprocess, with the session's XLA flags and `extra`."""
  return dict(os.environ, XLA_FLAGS=xla_flags(runtime_bound=runtime_bound), **extra)


def train_env(num_devices: int = 1, runtime_bound: bool = False) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(num_devices, runtime_bound)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env


def start_train(
  workdir: str | pathlib.Path,
  flags: list[str],
  log_path: pathlib.Path,
  num_devices: int = 1,
  runtime_bound: bool = False,
) -> subprocess.Popen:
  """`python -m launch.train --config=configs/tiny.py --workdir=... flags`, output to a file."""
  cmd = [
    sys.executable,
    "-m",
    "launch.train",
    "--config=configs/tiny.py",
    f"--workdir={workdir}",
    *flags,
  ]
  log = open(log_path, "ab")
  return subprocess.Popen(
    cmd,
    cwd=REPO,
    env=train_env(num_devices, runtime_bound),
    stdout=log,
    stderr=subprocess.STDOUT,
    start_new_session=True,
  )


def wait(proc: subprocess.Popen, timeout: float, log_path: pathlib.Path) -> int:
  """Exit code of `proc`; kills it (and fails) past `timeout` seconds."""
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(
      f"training subprocess ran over {timeout}s; log:\n{tail(log_path)}"
    ) from None


def run_train(
  workdir: str | pathlib.Path,
  flags: list[str],
  log_path: pathlib.Path,
  timeout: float = 240,
  num_devices: int = 1,
  runtime_bound: bool = False,
) -> None:
  proc = start_train(workdir, flags, log_path, num_devices, runtime_bound)
  rc = wait(proc, timeout, log_path)
  assert rc == 0, f"launch.train exited with {rc}; log:\n{tail(log_path)}"


def tail(path: pathlib.Path, n: int = 6000) -> str:
  try:
    return pathlib.Path(path).read_text(errors="replace")[-n:]
  except FileNotFoundError:
    return "<no log>"


def committed_steps(checkpoint_dir: str | pathlib.Path) -> list[int]:
  """Steps of finalised Orbax checkpoints (temporary dirs are renamed on commit)."""
  d = pathlib.Path(checkpoint_dir)
  if not d.is_dir():
    return []
  return sorted(
    int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()
  )


def poll(
  predicate,
  timeout: float,
  interval: float = 0.05,
  proc: subprocess.Popen | None = None,
  log_path: pathlib.Path | None = None,
) -> Any:
  """Polls until `predicate()` is truthy; fails past `timeout` or if `proc` exits first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = predicate()
    if value:
      return value
    if proc is not None and proc.poll() is not None:
      raise AssertionError(
        f"training exited ({proc.returncode}) before the condition held; "
        f"log:\n{tail(log_path) if log_path else ''}"
      )
    time.sleep(interval)
  if proc is not None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  raise AssertionError(
    f"condition not reached in {timeout}s; log:\n{tail(log_path) if log_path else ''}"
  )


def stage_losses(rows: Mapping[int, dict[str, Any]], stage: str) -> list[float]:
  return [r["loss"] for _, r in sorted(rows.items()) if r["stage"] == stage]


def hf_from_gguf(kind: str, gguf: pathlib.Path, tmp_path_factory) -> Any:
  """transformers' own import of a GGUF file ('model', f32, eval mode, or 'tokenizer'), made
  once per test session and shared by the pytest-xdist workers through files.

  transformers parses the GGUF's metadata (49k token strings) in Python for each import: ~20 s
  for the model and again for the tokenizer, in every test module that wants them (measured
  here: 44 s for the model). The saved state dict and tokenizer files reload in about a second
  and are transformers' import bit for bit: what the parity tests compare against is unchanged.
  """
  import filelock
  import torch
  import transformers

  if kind not in ("model", "tokenizer"):
    raise ValueError(f"kind={kind!r}; expected 'model' or 'tokenizer'")
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by workers
  folder = root / "hf_from_gguf" / f"{gguf.stem}_{kind}"
  folder.parent.mkdir(parents=True, exist_ok=True)
  with filelock.FileLock(str(folder) + ".lock"):
    if not (folder / "complete").exists():
      src = folder.parent / f"{gguf.stem}_src"
      src.mkdir(exist_ok=True)
      if not (src / gguf.name).exists():
        (src / gguf.name).symlink_to(gguf)
      folder.mkdir(exist_ok=True)
      if kind == "tokenizer":
        transformers.AutoTokenizer.from_pretrained(src, gguf_file=gguf.name).save_pretrained(folder)
      else:
        model = transformers.AutoModelForCausalLM.from_pretrained(
          src, gguf_file=gguf.name, dtype="float32"
        )
        model.config.to_json_file(folder / "config.json")
        torch.save(model.state_dict(), folder / "state_dict.pt")
      (folder / "complete").touch()
  if kind == "tokenizer":
    return transformers.AutoTokenizer.from_pretrained(folder)
  config = transformers.AutoConfig.from_pretrained(folder)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  model.load_state_dict(torch.load(folder / "state_dict.pt"))
  return model.eval()
