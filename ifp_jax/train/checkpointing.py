"""Orbax checkpoints: train state + JSON metadata (config, stage, mask stats) + data position.

Restores take an abstract target carrying the *current* shardings, so a run saved on one mesh
restores onto another. Params-only restore serves eval and export.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "meta", "data")


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` (async saves, keep-N)."""

  def __init__(
    self, directory: str | pathlib.Path, *, max_to_keep: int = 3, async_save: bool = True
  ):
    self.directory = pathlib.Path(directory).absolute()
    self.manager = ocp.CheckpointManager(
      self.directory,
      item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict, data_state: dict, *, force=False) -> bool:
    saved = self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(meta),
        data=ocp.args.JsonSave(data_state),
      ),
      force=force,
    )
    if saved:
      log.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, meta, data_state) at `step` (default latest) into the abstract target's shardings."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    out = self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore(),
        data=ocp.args.JsonRestore(),
      ),
    )
    return out.state, out.meta, out.data

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(
  directory: str | pathlib.Path, abstract_params: Any, step: int | None = None
) -> tuple[Any, dict]:
  """Only the params sub-tree of a saved TrainState (no optimizer state is read into memory)."""
  ckpt = Checkpointer(directory, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {pathlib.Path(directory).absolute()}")
  restored = ckpt.manager.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
        item={"params": abstract_params},
        restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
        partial_restore=True,
      ),
      meta=ocp.args.JsonRestore(),
    ),
  )
  ckpt.close()
  return restored.state["params"], restored.meta


def _restore_arg(x: jax.ShapeDtypeStruct) -> ocp.ArrayRestoreArgs:
  return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)
