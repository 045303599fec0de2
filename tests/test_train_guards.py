"""Issue 17, in process: a job never loses a good checkpoint and refuses what it cannot honour.

Fast tests cover the pieces (resume comparison, lock, run records, value checks); the slow ones
train the tiny model a few steps on 1 device (divergence, dead model, changed config, corrupted
latest checkpoint, reruns, bad SFT data found before CPT).
"""

import json
import logging
import math
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import train_utils as tu

from ifp_jax.data.pipeline import source_config
from ifp_jax.infer.run_loader import load_run
from ifp_jax.train import checkpointing, run_files
from ifp_jax.train.resume_check import ConfigMismatchError, check_resume, differences
from ifp_jax.train.trainer import DivergenceError, Trainer
from ifp_jax.train.validate import ConfigValidationError

ONE = dict(mesh=(1, 1, 1))


def _trainer(config, workdir):
  return Trainer(config, workdir, devices=jax.devices()[:1])


# --- fast: the pieces -------------------------------------------------------------------------
def test_resume_check_names_model_fields_and_allows_listed_ones():
  saved = {"model": {"k": 128, "mask_kind": "soft_topk"}, "cpt": {"steps": 4}, "mesh": [1, 8, 1]}
  now = {"model": {"k": 64, "mask_kind": "none"}, "cpt": {"steps": 9}, "mesh": [2, 2, 2]}
  with pytest.raises(ConfigMismatchError) as e:
    check_resume(saved, now, step=7)
  msg = str(e.value)
  assert "step 7" in msg and "model.k: 128 -> 64" in msg and "model.mask_kind" in msg
  assert "cpt.steps" in msg and "mesh" not in msg.split(";")[0]  # mesh changes are fine
  assert "\n" not in msg
  check_resume(saved, now, step=7, allowed="model,cpt.steps")  # explicitly allowed: no error
  # A field the checkpoint predates counts only when not at its default.
  assert differences({}, {"train": {"x": 1}}, defaults={"train": {"x": 1}}) == []
  assert differences({}, {"train": {"x": 2}}, defaults={"train": {"x": 1}})


def test_workdir_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
  held = run_files.WorkdirLock(tmp_path).acquire()
  try:
    with pytest.raises(run_files.WorkdirLockedError, match=f"pid {os.getpid()}"):
      run_files.WorkdirLock(tmp_path).acquire()
  finally:
    held.release()
  # A lock file left by a process that died (SIGKILL: no cleanup) is taken over.
  dead = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
  )
  (tmp_path / run_files.LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "h"}))
  lock = run_files.WorkdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / run_files.LOCK_NAME).read_text())["pid"] == os.getpid()
  lock.release()


def test_run_records_survive_partial_lines_and_reruns(tmp_path):
  metrics = tmp_path / "metrics.jsonl"
  metrics.write_text('{"step": 1, "loss": 2.0, "stage": "cpt"}\n{"step": 2, "lo')
  assert run_files.read_jsonl(metrics) == [{"step": 1, "loss": 2.0, "stage": "cpt"}]
  assert run_files.repair_jsonl(metrics) > 0 and metrics.read_text().endswith("}\n")
  summary = tmp_path / "summary.json"
  run_files.merge_summary(summary, {"step": 4, "stages": {"cpt": {"last_loss": 1.0}}})
  merged = run_files.merge_summary(summary, {"step": 6, "stages": {"cpt": {}, "sft": {"a": 1}}})
  assert merged["stages"] == {"cpt": {"last_loss": 1.0}, "sft": {"a": 1}} and merged["step"] == 6
  summary.write_text('{"stages": {"cpt"')  # partial: started afresh, no traceback
  assert run_files.merge_summary(summary, {"stages": {}})["stages"] == {}
  run_files.write_config(tmp_path, '{"a": 1}')
  run_files.write_config(tmp_path, '{"a": 2}')
  assert json.loads((tmp_path / "config.json").read_text()) == {"a": 2}
  history = sorted((tmp_path / "config_history").iterdir())
  assert [json.loads(p.read_text())["a"] for p in history] == [1, 2]


def test_root_cause_finds_the_os_error_under_wrapping():
  try:
    try:
      raise OSError(28, "No space left on device")
    except OSError as inner:
      raise RuntimeError("async save failed") from inner
  except RuntimeError as e:
    assert checkpointing.root_cause(e) == "OSError: [Errno 28] No space left on device"


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"train__checkpoint_every": 0}, "train.checkpoint_every"),
    ({"train__log_every": 0}, "train.log_every"),
    ({"cpt__steps": -3}, "cpt.steps"),
    ({"train__seq_len": 1024}, "train.seq_len"),  # tiny: max_position_embeddings 512
    ({"sft__llm_lr": float("nan")}, "sft.llm_lr"),
  ],
)
def test_bad_values_fail_before_compiling(tmp_path_factory, overrides, field):
  config = tu.small_config(tu.shared_data_dir(tmp_path_factory), **ONE, **overrides)
  workdir = tmp_path_factory.mktemp("bad_value")
  with pytest.raises(ConfigValidationError) as e:
    _trainer(config, workdir)
  assert field in str(e.value)
  assert not (workdir / "config.json").exists()  # a refused launch writes no record


def test_negative_max_steps_and_tilde_workdir(tmp_path_factory, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
  config = tu.small_config(tu.shared_data_dir(tmp_path_factory), **ONE)
  trainer = _trainer(config, "~/run")
  assert trainer.workdir == pathlib.Path(os.environ["HOME"]) / "run"
  with pytest.raises(ValueError, match="max_steps=-1"):
    trainer.run(max_steps=-1)


def test_strict_jsonl_fails_on_undecodable_bytes_and_binary_files_are_skipped(tmp_path):
  """Case 11: no silent replacement of bytes, no binary file trained on as text."""
  from ifp_jax.data import builders, sources

  bad = tmp_path / "docs.jsonl"
  bad.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
  with pytest.raises(ValueError, match=r"docs.jsonl:2: not UTF-8 \(byte 0xe9"):
    list(sources.iter_jsonl(str(bad), sources.MalformedLines(skip=False)))
  skip = sources.MalformedLines(skip=True)
  assert [o["text"] for _, o in sources.iter_jsonl(str(bad), skip)] == ["fine"]
  assert skip.count == 1

  folder = tmp_path / "corpus"
  folder.mkdir()
  (folder / "a.txt").write_text("some text")
  (folder / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
  files = sources.discover_files([str(folder)], extensions=(".txt",))
  errors = sources.MalformedLines(skip=False)
  docs = list(sources.read_documents(files, errors=errors))
  assert [t for _, t in docs] == ["some text"] and len(errors.binary_files) == 1

  # The cache key of .jsonl text depends on skip_malformed (the two modes hold other lines).
  fp = [builders._plan_text([str(bad)], {}, skip)[0] for skip in (False, True)]
  assert fp[0] != fp[1]


# --- slow: training ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tu.shared_data_dir(tmp_path_factory)


def _finite(state) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(jax.device_get(state)))


@pytest.mark.slow
def test_divergence_keeps_good_checkpoints_and_the_rerun_resumes(data_dir, tmp_path, caplog):
  """Case 1: lr 1e38 after two good steps. Step 3's state is finite (params ~1e38) but step 4,
  which runs on it, is NaN: neither is kept as a checkpoint, nothing good is rotated out, the
  bad states are aside, and the rerun resumes from step 2."""
  workdir = tmp_path / "run"
  base = dict(ONE, cpt__steps=6, train__checkpoint_every=1, train__keep_checkpoints=2)
  _trainer(tu.small_config(data_dir, **base), workdir).run(max_steps=2)
  assert tu.committed_steps(workdir / "checkpoints") == [1, 2]
  record = (workdir / "config.json").read_text()

  boom = tu.small_config(
    data_dir, **base, cpt__llm_lr=1e38, train__allow_config_change="cpt.llm_lr"
  )
  with pytest.raises(DivergenceError) as e:
    _trainer(boom, workdir).run()
  msg = str(e.value)
  assert "diverged at step 4" in msg and "last good checkpoint is step 2" in msg, msg
  assert "\n" not in msg
  assert tu.committed_steps(workdir / "checkpoints") == [1, 2]  # keep-2 counts good ones only
  assert tu.committed_steps(workdir / "diverged") == [4]  # aside, for diagnosis
  assert [p.name.split(".")[0] for p in (workdir / "suspect_checkpoints").iterdir()] == ["3"]
  assert (workdir / "config.json").read_text() != record  # that run was accepted and recorded

  # Twice in a row (the README's "run it again"): still the same good checkpoints.
  with pytest.raises(DivergenceError):
    _trainer(boom, workdir).run()
  assert tu.committed_steps(workdir / "checkpoints") == [1, 2]

  fixed = tu.small_config(data_dir, **base, train__allow_config_change="cpt.llm_lr")
  trainer = _trainer(fixed, workdir)
  state, _, _ = trainer.init_or_restore()
  assert int(state.step) == 2 and _finite(state)
  summary = trainer.run()
  # keep 2 confirmed ones + the newest (confirmed by the step after it, if any).
  assert summary["step"] == 6 and tu.committed_steps(workdir / "checkpoints") == [4, 5, 6]

  # Case 3: rerunning the finished job keeps the stages in summary.json.
  again = _trainer(fixed, workdir).run()
  assert again["stages"]["cpt"]["last_step"] == 6
  assert json.loads((workdir / "summary.json").read_text())["stages"]["cpt"]["last_step"] == 6

  # Cases 4, 8, 9: a changed model is refused naming the field; config.json stays the last one.
  record = (workdir / "config.json").read_text()
  for override, field in (({"model__k": 64}, "model.k"), ({"model__mask_kind": "none"}, "mask")):
    with pytest.raises(ConfigMismatchError, match=field):
      _trainer(tu.small_config(data_dir, **base, **override), workdir).run()
  assert (workdir / "config.json").read_text() == record

  # Case 7: a corrupted latest step is reported, set aside, and the previous one restores.
  data_files = [p for p in (workdir / "checkpoints" / "6" / "state").rglob("*") if p.is_file()]
  big = max(data_files, key=lambda p: p.stat().st_size)
  big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
  # Eval and generate (load_run) read only the params, which this truncation may spare: on a
  # copy whose step 6 has every data file truncated, they fall back to step 5 with a warning
  # naming step 6, and move nothing (readers never do).
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  for f in (copy / "checkpoints" / "6" / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  with caplog.at_level(logging.WARNING):
    assert load_run(copy).step == 5
  warned = [r.getMessage() for r in caplog.records if "falling back to step 5" in r.getMessage()]
  assert warned and "step 6" in warned[0], [r.getMessage() for r in caplog.records]
  assert tu.committed_steps(copy / "checkpoints") == [4, 5, 6]
  trainer = _trainer(fixed, workdir)
  state, _, _ = trainer.init_or_restore()
  assert int(state.step) == 5
  assert tu.committed_steps(workdir / "checkpoints") == [4, 5]
  assert list((workdir / "corrupt_checkpoints").iterdir())


@pytest.mark.slow
def test_dead_model_stops_nonzero_without_saving_it(data_dir, tmp_path, caplog):
  """Case 10: lr 1e6 kills the model (gradient norm exactly 0, loss = ln V)."""
  workdir = tmp_path / "run"
  config = tu.small_config(
    data_dir, **ONE, cpt__steps=8, cpt__llm_lr=1e6, train__checkpoint_every=1
  )
  with caplog.at_level(logging.WARNING), pytest.raises(DivergenceError) as e:
    _trainer(config, workdir).run()
  msg = str(e.value)
  assert "dead model" in msg and f"{math.log(384):.4f}" in msg, msg
  rows = tu.read_metrics(workdir)
  assert max(rows) < 8 and rows[max(rows)]["grad_norm"] == 0.0
  # Step 1's state is already dead (step 2 on it has gradient 0): no checkpoint is good.
  assert rows[1]["grad_norm"] > 0 and rows[2]["grad_norm"] == 0.0
  assert tu.committed_steps(workdir / "checkpoints") == []
  assert "no good checkpoint yet" in msg


@pytest.mark.slow
def test_bad_sft_data_fails_before_cpt_runs(data_dir, tmp_path):
  """Case 13: the SFT source is read before the first CPT step."""
  bad = tmp_path / "sft.jsonl"
  bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
  config = tu.small_config(data_dir, **ONE, cpt__steps=3, sft__steps=2)
  config.data.sft.sources = ml_collections.ConfigDict(
    {"bad": source_config("jsonl_sft", [str(bad)])}
  )
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="sft.jsonl"):
    _trainer(config, workdir).run()
  assert not (workdir / "metrics.jsonl").exists() or not tu.read_metrics(workdir)
