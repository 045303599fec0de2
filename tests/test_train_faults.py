"""Issue 17, as a user meets it: `launch.train` subprocesses on 1 CPU device, killed, doubled,
starved of disk, interrupted at random. Each subprocess is bounded by a timeout.
"""

import os
import random
import resource
import signal
import subprocess
import sys

import pytest
import train_utils as tu

STEPS = {"cpt__steps": 8, "sft__steps": 3}
TOTAL = sum(STEPS.values())
TIMEOUT = 240
LONG = dict(cpt__steps=200, sft__steps=0)  # a run that is still going when the test acts


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tu.shared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  tu.run_train(workdir, tu.cli_flags(data_dir, **STEPS), workdir / "log.txt", TIMEOUT)
  return tu.read_metrics(workdir)


def _logged(workdir) -> int:
  path = workdir / "metrics.jsonl"
  return len(path.read_text().splitlines()) if path.exists() else 0


def _stop(proc):
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)


@pytest.mark.slow
def test_sigterm_on_a_checkpoint_step_exits_143(data_dir, tmp_path):
  """Case 5: every step saves, so SIGTERM always lands on a step that has a checkpoint."""
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  proc = tu.start_train(workdir, tu.cli_flags(data_dir, **LONG, train__checkpoint_every=1), log)
  try:
    tu.poll(lambda: _logged(workdir) >= 2, TIMEOUT, proc=proc, log_path=log)
    proc.send_signal(signal.SIGTERM)
    rc = tu.wait(proc, TIMEOUT, log)
  finally:
    _stop(proc)
  assert rc == 143, f"exit code {rc}; log:\n{tu.tail(log)}"
  stopped = max(tu.read_metrics(workdir))
  assert tu.committed_steps(workdir / "checkpoints")[-1] == stopped


@pytest.mark.slow
def test_second_job_on_a_running_workdir_refuses(data_dir, tmp_path):
  """Case 2: the second launch exits non-zero naming the holder; the first run's files stay."""
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  flags = tu.cli_flags(data_dir, **LONG, train__checkpoint_every=2)
  first = tu.start_train(workdir, flags, log)
  try:
    tu.poll(lambda: tu.committed_steps(workdir / "checkpoints"), TIMEOUT, proc=first, log_path=log)
    log2 = tmp_path / "log2.txt"
    rc2 = tu.wait(tu.start_train(workdir, flags, log2), TIMEOUT, log2)
    assert rc2 == 2, tu.tail(log2)
    assert f"pid {first.pid}" in tu.tail(log2) and "in use" in tu.tail(log2)
    assert first.poll() is None, "the first run should still be training"
    first.send_signal(signal.SIGTERM)
    assert tu.wait(first, TIMEOUT, log) == 143
  finally:
    _stop(first)
  rows = tu.read_metrics(workdir)
  steps = [int(line.split('"step": ')[1].split(",")[0]) for line in open(workdir / "metrics.jsonl")]
  assert steps == sorted(steps) == list(range(1, max(rows) + 1))  # one writer, no interleaving
  assert tu.committed_steps(workdir / "checkpoints")[-1] == max(rows)


@pytest.mark.slow
def test_failed_save_stops_at_once_with_the_cause(data_dir, reference, tmp_path):
  """Case 6: a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes checkpoint writes fail with
  EFBIG, as a full disk fails them with ENOSPC; the job stops at that save in one line."""
  workdir, log = tmp_path / "run", tmp_path / "log.txt"

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

  cmd = [sys.executable, "-m", "launch.train", "--config=configs/tiny.py", f"--workdir={workdir}"]
  cmd += tu.cli_flags(data_dir, **LONG, train__checkpoint_every=3)
  with open(log, "wb") as out:
    proc = subprocess.Popen(
      cmd, cwd=tu.REPO, env=tu.train_env(1), stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit
    )
    rc = tu.wait(proc, TIMEOUT, log)
  text = tu.tail(log, 10**7)  # tensorstore's asyncio noise after our line can be long
  assert rc == 2, f"exit code {rc}; log:\n{text[-4000:]}"
  ours = [line for line in text.splitlines() if line.startswith("launch.train:")]
  assert len(ours) == 1, ours
  assert ours[0].startswith("launch.train: saving step 3 to") and "File too large" in ours[0]
  # Stopped when the failure surfaced (by the next save at the latest), not 200 steps later.
  assert max(tu.read_metrics(workdir)) <= 3 + 3
  # No traceback through our code (tensorstore's own asyncio callbacks still print some).
  assert 'launch/train.py", line' not in text and 'train/trainer.py", line' not in text


@pytest.mark.slow
def test_random_kills_then_finish_match_an_uninterrupted_run(data_dir, reference, tmp_path):
  """SIGKILL or SIGTERM at random points, three times in a row, then run to the end: every
  step's numbers equal the uninterrupted run's and no committed checkpoint is ever lost."""
  rng = random.Random(17)
  workdir, log = tmp_path / "run", tmp_path / "log.txt"
  flags = tu.cli_flags(data_dir, train__checkpoint_every=2, **STEPS)
  latest = 0
  for _ in range(3):
    proc = tu.start_train(workdir, flags, log)
    sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
    target = _logged(workdir) + rng.randint(1, 3)
    try:
      tu.poll(lambda t=target, p=proc: _logged(workdir) >= t or p.poll() is not None, TIMEOUT)
      if proc.poll() is None:
        proc.send_signal(sig)
      rc = tu.wait(proc, TIMEOUT, log)
    finally:
      _stop(proc)
    assert rc in (0, 143, -signal.SIGKILL), f"exit {rc}; log:\n{tu.tail(log)}"
    steps = tu.committed_steps(workdir / "checkpoints")
    assert steps and steps[-1] >= latest, (steps, latest)  # never behind the last good one
    latest = steps[-1]
  tu.run_train(workdir, flags, log, TIMEOUT)
  rows = tu.read_metrics(workdir)
  assert sorted(rows) == list(range(1, TOTAL + 1))
  for step, want in reference.items():
    for key in ("loss", "ce", "grad_norm"):
      assert rows[step][key] == want[key], f"step {step} {key}: {rows[step][key]} vs {want[key]}"
  assert tu.committed_steps(workdir / "checkpoints")[-1] == TOTAL
