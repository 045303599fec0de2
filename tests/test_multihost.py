"""Multi-host: 2 processes x 4 CPU devices (jax.distributed on localhost, gloo collectives) train
the same as 1 process x 8 devices, and their checkpoint restores in 1 process.

Data is read per host: process i reads records [i::2] of every source, so a 2-process global
batch is host 0's batch stacked on host 1's, not the 1-process batch. The 1-process reference
therefore builds its batches the same way (two host iterators, concatenated); with equal global
batches, the same (8, 1, 1) mesh and the same HLO, losses agree to reduction-order noise.

A resumed 2-process job must continue with each host's own data position (the checkpoint's data
item holds one iterator state per process).

The 2-process jobs run through `launch/local_multiprocess.sh` (the localhost launcher in
docs/scaling.md), bounded by a timeout; the whole process group is killed on failure. The data
is always built in this process first: concurrent TFDS builds of one source collide.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import train_utils as tu

from ifp_jax.data.pipeline import build_iterator
from ifp_jax.data.tokenization import load_tokenizer
from ifp_jax.train.checkpointing import Checkpointer
from ifp_jax.train.state import abstract_state
from ifp_jax.train.trainer import Trainer

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
MESH = (8, 1, 1)
STEPS = {"cpt": 3, "sft": 3}
TOTAL = sum(STEPS.values())
# Warm-up as in test_train_mesh.py: Adam's first updates ~ lr * sign(g) amplify reduction-order
# noise when the LR is at its peak from step 1.
OVERRIDES = {
  "mesh": MESH,
  "cpt__steps": STEPS["cpt"],
  "sft__steps": STEPS["sft"],
  "cpt__warmup_steps": 4,
  "sft__warmup_steps": 4,
  "train__batch_size": 8,
}
# Restored vs reference state: max |diff| <= ATOL + 1e-4 * max |value| per leaf (measured: <= 6e-6
# on parameters, the predictor head's tiny-gradient units being the largest); one Adam step
# moves a parameter by ~lr >= 7.5e-4 here, so a skipped or doubled update would not pass.
ATOL = 2e-5
TIMEOUT = 200  # seconds for the 2-process job (~35 s on 2 idle cores)


class _Hosts:
  """Global batches of a 2-host job in one process: host 0's rows, then host 1's."""

  def __init__(self, iterators):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self):
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def take_window(self):
    """Both hosts' stream statistics (hosts read disjoint documents, so counts add up)."""
    w = [it.take_window() for it in self.iterators]
    rows = sum(x["data_doc_rows"] for x in w)
    top = max(x["data_max_doc_share"] * x["data_doc_rows"] for x in w)
    return {
      "data_docs": sum(x["data_docs"] for x in w),
      "data_max_doc_share": top / rows if rows else 0.0,
      "data_doc_rows": rows,
      "data_real_frac": sum(x["data_real_frac"] for x in w) / len(w),  # equal host batches
    }

  def get_state(self):
    return {"hosts": [it.get_state() for it in self.iterators]}

  def set_state(self, state):
    for it, s in zip(self.iterators, state["hosts"], strict=True):
      it.set_state(s)


class TwoHostDataTrainer(Trainer):
  """1 process, all 8 devices, fed what 2 hosts would read (see Trainer._iterator)."""

  def _iterator(self, stage, split=None, num_epochs=None):
    return _Hosts(
      [
        build_iterator(
          self.config.data,
          self.tokenizer,
          kind=stage.name,
          seq_len=self.config.train.seq_len,
          batch_size=self.host_batch // 2,
          process_index=i,
          process_count=2,
          seed=self.config.seed,
          split=split,
          num_epochs=num_epochs,
        )
        for i in range(2)
      ]
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tu.shared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """1 process x 8 devices on the 2-host global batches (also builds the TFDS data first, so
  the two processes below only read it)."""
  assert len(jax.devices()) == 8, "tests/conftest.py should give 8 fake CPU devices"
  workdir = tmp_path_factory.mktemp("mh_reference")
  summary = TwoHostDataTrainer(tu.small_config(data_dir, **OVERRIDES), workdir).run()
  assert summary["step"] == TOTAL
  return workdir


def launch_two_processes(workdir: pathlib.Path, flags: list[str], tag: str) -> None:
  """`launch/local_multiprocess.sh 2 4 -- launch.train ...`; fails (after killing the whole
  process group) past TIMEOUT or on a non-zero exit. Logs: workdir/logs_<tag>/process_<i>.log."""
  logs = workdir / f"logs_{tag}"
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    IFP_LOG_DIR=str(logs),
    PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )
  env["XLA_FLAGS"] = tu.xla_flags()  # the launcher adds 4 devices per process
  cmd = [
    "bash",
    "launch/local_multiprocess.sh",
    "2",
    "4",
    "--",
    "--config=configs/tiny.py",
    f"--workdir={workdir}",
    *flags,
  ]
  launcher_log = workdir / f"launcher_{tag}.log"
  with open(launcher_log, "wb") as out:
    proc = subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
      rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      rc = None
    finally:
      try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (none after a clean exit)
      except ProcessLookupError:
        pass
      proc.wait()
  if rc != 0:
    detail = "".join(f"--- {p.name}\n{tu.tail(p, 3000)}\n" for p in sorted(logs.glob("*.log")))
    pytest.fail(
      f"2-process job {'timed out' if rc is None else f'exited with {rc}'}:\n"
      f"{tu.tail(launcher_log, 2000)}\n{detail}"
    )


@pytest.fixture(scope="module")
def two_processes(reference, data_dir, tmp_path_factory):
  """The reference's run as 2 processes x 4 devices into one workdir."""
  workdir = tmp_path_factory.mktemp("mh_two_processes")
  launch_two_processes(workdir, tu.cli_flags(data_dir, **OVERRIDES), "run")
  return workdir


def test_two_processes_log_the_losses_of_one_process(reference, two_processes):
  ref, got = tu.read_metrics(reference), tu.read_metrics(two_processes)
  assert sorted(got) == sorted(ref) == list(range(1, TOTAL + 1))
  for step, want in ref.items():
    row = got[step]
    assert row["stage"] == want["stage"]
    assert row["tokens"] == want["tokens"]  # the same global batches
    for key in ("loss", "ce", "grad_norm_llm"):
      tu.assert_close_rel(row[key], want[key], 1e-5, f"step {step} {key}")
    tu.assert_close_rel(row["grad_norm"], want["grad_norm"], 1e-4, f"step {step} grad_norm")
  assert all(ref[s]["lr_llm"] > 0 for s in (2, 3, 5, 6))  # the updates matter for later losses


def test_both_processes_ran_and_only_process_zero_wrote_run_files(two_processes):
  logs = two_processes / "logs_run"
  for i in range(2):
    text = (logs / f"process_{i}.log").read_text(errors="replace")
    assert f"process {i} of 2, 4 local / 8 global devices" in text, text[-3000:]
  assert "training summary" in (logs / "process_0.log").read_text()
  assert "training summary" not in (logs / "process_1.log").read_text()
  lines = (two_processes / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == TOTAL  # one writer, not one per process
  for name in ("config.json", "summary.json", "loss_curve.png"):
    assert (two_processes / name).is_file(), name
  assert tu.committed_steps(two_processes / "checkpoints") == [STEPS["cpt"], TOTAL]


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def _host(tree):
  return _leaves(jax.tree.map(np.asarray, jax.device_get(tree)))


def test_two_process_checkpoint_restores_in_one_process(
  reference, two_processes, data_dir, tmp_path
):
  """Restore the 2-process checkpoint in 1 process on another mesh (2, 2, 2); it equals the
  1-process reference's final state (same batches, same updates) up to reduction-order noise."""
  trainer = Trainer(tu.small_config(data_dir, **{**OVERRIDES, "mesh": (2, 2, 2)}), tmp_path)
  with trainer._scope():
    abstract, _ = abstract_state(trainer.ifp, trainer.tx, trainer.mesh)
  got_state, meta, data_state = Checkpointer(two_processes / "checkpoints").restore(abstract)
  want_state, _, _ = Checkpointer(reference / "checkpoints").restore(abstract)
  assert int(got_state.step) == int(want_state.step) == meta["step"] == TOTAL
  assert meta["stage"] == data_state["stage"] == "sft"
  got, want = _host(got_state), _host(want_state)
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, a), (_, b), (_, like) in zip(got, want, _leaves(abstract), strict=True):
    assert a.shape == b.shape == like.shape and a.dtype == b.dtype == like.dtype
    if not a.size:
      continue
    diff, scale = float(np.max(np.abs(a - b))), float(np.max(np.abs(b)))
    assert diff <= ATOL + 1e-4 * scale, f"{jax.tree_util.keystr(path)}: max |diff| {diff:.2e}"
  leaf = got_state.params["model"]["llm"]["layers"]["mlp"]["gate_proj"]["kernel"]
  assert (
    leaf.sharding.spec
    == abstract.params["model"]["llm"]["layers"]["mlp"]["gate_proj"]["kernel"].sharding.spec
  )


# Resume of a 2-process job. Host-local data positions diverge once the hosts' documents end at
# different places (with the row shuffle window off, after ~21 steps of 4 rows/host here; with
# the default 1024-row window, at the first window refill, ~step 257).
STOP, END = 24, 26
RESUME = {
  **OVERRIDES,
  "cpt__steps": END,
  "sft__steps": 0,
  "train__checkpoint_every": STOP,
  "data__shuffle_window": 0,
}


def _host0_state_misleads_host1(config) -> bool:
  """Would host 1, resumed from host 0's saved position at STOP, read other rows than it
  should? (True makes the resume test below able to see a single shared data position.)"""
  tok = load_tokenizer(config.data.tokenizer)
  its = [
    build_iterator(
      config.data,
      tok,
      kind="cpt",
      seq_len=config.train.seq_len,
      batch_size=config.train.batch_size // 2,
      process_index=i,
      process_count=2,
      seed=config.seed,
    )
    for i in range(2)
  ]
  for _ in range(STOP):
    for it in its:
      next(it)
  host0_state = its[0].get_state()
  want = next(its[1])
  its[1].set_state(host0_state)
  return not np.array_equal(next(its[1])["input_ids"], want["input_ids"])


def test_two_process_job_resumes_with_each_hosts_data_position(data_dir, tmp_path):
  """Run END steps (checkpoints at STOP and END), drop checkpoint END and the metrics, rerun:
  the resumed steps must log the uninterrupted losses (same processes, same mesh)."""
  # (Also builds the data here, before the two processes read it.)
  if not _host0_state_misleads_host1(tu.small_config(data_dir, **RESUME)):
    pytest.skip(f"at step {STOP} both hosts' data positions coincide on this stdlib")
  flags = tu.cli_flags(data_dir, **RESUME)
  launch_two_processes(tmp_path, flags, "uninterrupted")
  assert tu.committed_steps(tmp_path / "checkpoints") == [STOP, END]
  uninterrupted = tu.read_metrics(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / str(END))
  (tmp_path / "metrics.jsonl").unlink()
  launch_two_processes(tmp_path, flags, "resumed")
  resumed = tu.read_metrics(tmp_path)
  assert sorted(resumed) == list(range(STOP + 1, END + 1))
  assert f"resumed from step {STOP}" in (tmp_path / "logs_resumed" / "process_1.log").read_text()
  pairs = {s: (resumed[s]["loss"], uninterrupted[s]["loss"]) for s in sorted(resumed)}
  assert all(abs(a - b) <= 1e-6 * abs(b) for a, b in pairs.values()), (
    f"(resumed, uninterrupted) losses: {pairs}"
  )
