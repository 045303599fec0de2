"""Preemption: a run killed with SIGKILL and restarted logs the same later losses as an
uninterrupted run; SIGTERM saves a checkpoint at the step it stopped and exits with 143.

Runs `python -m launch.train` in subprocesses on 1 CPU device, each bounded by a timeout.
"""

import os
import signal

import jax
import pytest
import train_utils as tu

from ifp_jax.train.checkpointing import Checkpointer
from ifp_jax.train.trainer import Trainer

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

STEPS = {"cpt__steps": 8, "sft__steps": 3}
TOTAL = sum(STEPS.values())
TIMEOUT = 240  # seconds per subprocess (a run takes ~20 s on 2 idle cores)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tu.shared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  tu.run_train(workdir, tu.cli_flags(data_dir, **STEPS), workdir / "log.txt", TIMEOUT)
  rows = tu.read_metrics(workdir)
  assert sorted(rows) == list(range(1, TOTAL + 1))
  return rows


def test_sigkill_then_resume_matches_uninterrupted(data_dir, reference, tmp_path):
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  flags = tu.cli_flags(data_dir, train__checkpoint_every=2, **STEPS)
  proc = tu.start_train(workdir, flags, log)
  try:
    tu.poll(lambda: tu.committed_steps(workdir / "checkpoints"), TIMEOUT, proc=proc, log_path=log)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, f"the run ended by itself ({proc.returncode})"
  resume_from = Checkpointer(workdir / "checkpoints").latest_step()
  assert resume_from is not None and resume_from < STEPS["cpt__steps"], resume_from
  before = tu.read_metrics(workdir)
  assert max(before) < TOTAL  # it really was interrupted

  tu.run_train(workdir, flags, log, TIMEOUT)
  rows = tu.read_metrics(workdir)  # the resumed run appended; re-run steps keep their last row
  assert sorted(rows) == list(range(1, TOTAL + 1))
  later = [s for s in rows if s > resume_from]
  assert len(later) >= TOTAL - STEPS["cpt__steps"] + 1  # some CPT steps after the resume
  for step in later:
    got, want = rows[step], reference[step]
    assert got["stage"] == want["stage"] and got["tokens"] == want["tokens"], step
    # Same program, same restored state, same batches: bit-for-bit the same numbers.
    for key in ("loss", "ce", "grad_norm", "mask_kept_mean"):
      assert got[key] == want[key], f"step {step} {key}: {got[key]} vs {want[key]}"
  for step in range(1, resume_from + 1):  # the killed run's own rows agree as well
    assert rows[step]["loss"] == reference[step]["loss"]


def test_sigterm_saves_a_restorable_checkpoint(data_dir, tmp_path):
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  overrides = dict(STEPS, cpt__steps=200, train__checkpoint_every=1000)
  proc = tu.start_train(workdir, tu.cli_flags(data_dir, **overrides), log)
  metrics = workdir / "metrics.jsonl"
  try:
    tu.poll(
      lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2,
      TIMEOUT,
      proc=proc,
      log_path=log,
    )
    proc.send_signal(signal.SIGTERM)
    rc = tu.wait(proc, TIMEOUT, log)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait(timeout=60)
  assert rc == 143, f"exit code {rc}"
  stopped = max(tu.read_metrics(workdir))
  assert 2 <= stopped < overrides["cpt__steps"]
  assert tu.committed_steps(workdir / "checkpoints") == [stopped]

  # The checkpoint restores: the trainer (same config, 1 device) resumes at that step.
  config = tu.small_config(data_dir, mesh=(1, 1, 1), **overrides)
  trainer = Trainer(config, workdir, devices=jax.devices()[:1])
  state, _, data_state = trainer.init_or_restore()
  assert int(state.step) == stopped
  assert data_state["stage"] == "cpt" and len(data_state["iterators"]) == 1
  meta = trainer.ckpt.read_meta()
  assert meta["step"] == stopped and meta["stage"] == "cpt"


@pytest.mark.slow
def test_sigkill_in_sft_with_replay_resumes_exactly(data_dir, tmp_path):
  """Killed in SFT, where configs/tiny.py mixes CPT replay rows (split documents) into the
  skill batches: the resumed run logs the same later losses as an uninterrupted one, also the
  held-out losses evaluated every 2 steps (a fixed sample)."""
  steps = {
    "cpt__steps": 2,
    "sft__steps": 8,
    "train__checkpoint_every": 2,
    "train__eval_every": 2,
    "train__eval_rows": 32,
  }
  flags = tu.cli_flags(data_dir, **steps)
  ref_dir = tmp_path / "reference"
  tu.run_train(ref_dir, flags, tmp_path / "ref_log.txt", TIMEOUT)
  reference = tu.read_metrics(ref_dir)
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  proc = tu.start_train(workdir, flags, log)
  try:
    tu.poll(
      lambda: any(s >= 4 for s in tu.committed_steps(workdir / "checkpoints")),
      TIMEOUT,
      proc=proc,
      log_path=log,
    )
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
  resume_from = Checkpointer(workdir / "checkpoints").latest_step()
  assert resume_from is not None and 4 <= resume_from < 10, resume_from
  tu.run_train(workdir, flags, log, TIMEOUT)
  rows = tu.read_metrics(workdir)
  assert sorted(rows) == list(range(1, 11))
  for step in range(resume_from + 1, 11):
    assert rows[step]["stage"] == "sft"
    for key in ("loss", "ce", "grad_norm", "data_doc_rows"):
      assert rows[step][key] == reference[step][key], (step, key)
    held = ("heldout_loss", "heldout_text_loss") if step % 2 == 0 else ()
    for key in held:
      assert rows[step][key] == reference[step][key], (step, key)
  assert any(rows[s]["data_doc_rows"] > 0 for s in range(3, 11))  # replay rows were there
