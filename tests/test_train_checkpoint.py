"""Checkpoints: a train state saved on one mesh restores on another (values and target
shardings); params-only restore reads just the parameters."""

import jax
import numpy as np
import pytest
from train_utils import shared_data_dir, small_config

from ifp_jax.train import checkpointing, sharding
from ifp_jax.train.state import BATCH_NDIMS, abstract_state, compile_steps
from ifp_jax.train.trainer import Trainer

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

SAVE_MESH, RESTORE_MESH = (1, 8, 1), (2, 2, 2)
STEPS = 2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """Two train steps on SAVE_MESH, saved through the trainer; the state kept on the host."""
  data_dir = shared_data_dir(tmp_path_factory)
  workdir = tmp_path_factory.mktemp("ckpt_save")
  trainer = Trainer(small_config(data_dir, mesh=SAVE_MESH, cpt__steps=STEPS), workdir)
  state, shardings, data_state = trainer.init_or_restore()
  assert data_state is None
  with trainer._scope():
    train, _ = compile_steps(
      trainer.step_cfg, trainer.tx, trainer.lr_fns, shardings, trainer.mesh, BATCH_NDIMS
    )
  stage = trainer.stages[0]
  it = trainer._iterator(stage)
  for _ in range(STEPS):
    with trainer._scope():
      state, _ = train(state, sharding.host_to_global(next(it), trainer.mesh))
  trainer._save(STEPS, state, stage, it, force=True)
  trainer.ckpt.wait()
  host = jax.tree.map(np.asarray, jax.device_get(state))
  return {
    "data_dir": data_dir,
    "dir": trainer.ckpt.directory,
    "state": host,
    "iterator": it.get_state(),
  }


@pytest.fixture(scope="module")
def target(saved, tmp_path_factory):
  """A trainer on RESTORE_MESH (other workdir): its model, optimizer and mesh."""
  config = small_config(saved["data_dir"], mesh=RESTORE_MESH, cpt__steps=STEPS)
  return Trainer(config, tmp_path_factory.mktemp("ckpt_target"))


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_restore_on_another_mesh(saved, target):
  with target._scope():
    abstract, _ = abstract_state(target.ifp, target.tx, target.mesh)
  restored, meta, data_state = checkpointing.Checkpointer(saved["dir"]).restore(abstract)
  assert meta["step"] == STEPS and meta["stage"] == "cpt"
  assert data_state == {"stage": "cpt", "iterators": [saved["iterator"]]}
  assert int(restored.step) == STEPS
  got, want, spec = _leaves(restored), _leaves(saved["state"]), _leaves(abstract)
  assert [p for p, _ in got] == [p for p, _ in want] == [p for p, _ in spec]
  moved = 0
  for (path, leaf), (_, value), (_, like) in zip(got, want, spec, strict=True):
    name = jax.tree_util.keystr(path)
    assert leaf.shape == value.shape and leaf.dtype == value.dtype, name
    assert leaf.sharding == like.sharding, f"{name}: {leaf.sharding} != {like.sharding}"
    assert leaf.sharding.mesh.devices.shape == RESTORE_MESH
    np.testing.assert_array_equal(np.asarray(leaf), value, err_msg=name)
    moved += "tensor" in str(leaf.sharding.spec)
  assert moved > 0, "no leaf is sharded over 'tensor' on the target mesh: weak test"
  # The optimizer state came back too (Adam moments are non-zero after two steps).
  mu = [np.asarray(x) for p, x in got if "mu" in jax.tree_util.keystr(p)]
  assert mu and any(np.abs(m).max() > 0 for m in mu)


def test_trainer_resumes_on_another_mesh(saved, target, tmp_path):
  """Trainer.init_or_restore on RESTORE_MESH picks up a SAVE_MESH checkpoint."""
  import shutil

  workdir = tmp_path / "run"
  shutil.copytree(saved["dir"], workdir / "checkpoints")
  config = small_config(saved["data_dir"], mesh=RESTORE_MESH, cpt__steps=STEPS)
  trainer = Trainer(config, workdir)
  state, _, data_state = trainer.init_or_restore()
  assert int(state.step) == STEPS and data_state["iterators"] == [saved["iterator"]]
  np.testing.assert_array_equal(
    np.asarray(state.params["model"]["llm"]["embed_tokens"]["embedding"]),
    saved["state"].params["model"]["llm"]["embed_tokens"]["embedding"],
  )


def test_restore_params_only(saved, target):
  with target._scope():
    abstract, _ = abstract_state(target.ifp, target.tx, target.mesh)
  params, meta = checkpointing.restore_params(saved["dir"], abstract.params)
  assert meta["step"] == STEPS
  got, want = _leaves(params), _leaves(saved["state"].params)
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, leaf), (_, value), (_, like) in zip(got, want, _leaves(abstract.params), strict=True):
    name = jax.tree_util.keystr(path)
    assert leaf.sharding == like.sharding, name
    np.testing.assert_array_equal(np.asarray(leaf), value, err_msg=name)


def test_max_steps_budget_ends_with_a_checkpoint(tmp_path_factory):
  """A run bounded by max_steps saves where it stopped; running again continues from there."""
  from train_utils import committed_steps, read_metrics

  workdir = tmp_path_factory.mktemp("max_steps")
  config = small_config(shared_data_dir(tmp_path_factory), mesh=(1, 1, 1), cpt__steps=3)
  Trainer(config, workdir, devices=jax.devices()[:1]).run(max_steps=2)
  assert committed_steps(workdir / "checkpoints") == [2]
  summary = Trainer(config, workdir, devices=jax.devices()[:1]).run()
  assert summary["step"] == 3 and sorted(read_metrics(workdir)) == [1, 2, 3]
