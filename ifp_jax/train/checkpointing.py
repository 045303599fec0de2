"""Orbax checkpoints: train state + JSON metadata (config, stage, mask stats) + data position.

Restores take an abstract target carrying the *current* shardings, so a run saved on one mesh
restores onto another. Params-only restore serves eval and export.
"""

from __future__ import annotations

import logging
import pathlib
import re
import shutil
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

ITEMS = ("state", "meta", "data")


class CheckpointError(RuntimeError):
  """A checkpoint problem a user can act on, in one line (the CLI prints it and exits 2)."""


def root_cause(exc: BaseException) -> str:
  """One line for an exception buried in Orbax/asyncio wrapping: the first OSError if any
  (e.g. '[Errno 28] No space left on device'), else the innermost exception."""
  seen, todo, innermost = set(), [exc], exc
  while todo:
    e = todo.pop(0)
    if id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError):
      return f"{type(e).__name__}: {e}"
    innermost = e
    todo += list(getattr(e, "exceptions", ()))  # ExceptionGroup
    todo += [x for x in (e.__cause__, e.__context__) if x is not None]
  text = " ".join(str(innermost).split())
  # Tensorstore wraps the OS error in a long ValueError: lead with the part a user acts on.
  os_error = _OS_ERROR.search(text)
  short = f"{type(innermost).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"
  return f"{os_error.group(0).strip()} ({short})" if os_error else short


_OS_ERROR = re.compile(
  r"\[Errno \d+\][^\]\"\[]*|OS error[^\]\"\[]*|No space left on device|File too large|"
  r"Read-only file system|Permission denied|Disk quota exceeded"
)


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` (async saves, keep-N)."""

  def __init__(
    self,
    directory: str | pathlib.Path,
    *,
    max_to_keep: int = 3,
    async_save: bool = True,
    writable: bool = True,
  ):
    """`writable=False`: readers (eval, generate) never move a corrupt step aside."""
    self.directory = pathlib.Path(directory).absolute()
    self._writable = writable
    self._pending: int | None = None
    self.manager = ocp.CheckpointManager(
      self.directory,
      item_names=ITEMS,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
      ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict, data_state: dict, *, force=False) -> bool:
    """Starts an (async) save; False if not due or `step` is already saved (e.g. SIGTERM on a
    checkpoint step). A failed save, this one's or an earlier async one's, raises
    CheckpointError naming the step and the cause."""
    if step in self.manager.all_steps():
      return False
    if self._pending is not None:
      # Orbax's save waits for the previous one and re-raises its failure: wait here, so a
      # failure is reported under the step that failed, not the one being started.
      try:
        self.manager.wait_until_finished()
      except Exception as e:  # noqa: BLE001 - turned into one actionable line
        raise self._save_error(self._pending, e) from e
    self.check()
    self._pending = step
    try:
      saved = self.manager.save(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(meta),
          data=ocp.args.JsonSave(data_state),
        ),
        force=force,
      )
    except Exception as e:  # noqa: BLE001 - turned into one actionable line
      raise self._save_error(step, e) from e
    if saved:
      log.info("checkpoint: saving step %d to %s", step, self.directory)
    return saved

  def _save_error(self, step: int | None, e: BaseException) -> CheckpointError:
    where = f"step {step}" if step is not None else "a checkpoint"
    return CheckpointError(f"saving {where} to {self.directory} failed: {root_cause(e)}")

  def check(self) -> None:
    """Raises CheckpointError if an async save has failed (cheap: call every step)."""
    try:
      self.manager.check_for_errors()
      thread = getattr(self.manager, "_finalize_thread", None)
      t = thread.get() if thread is not None and hasattr(thread, "get") else None
      if t is not None and not t.is_alive() and getattr(t, "exception", None) is not None:
        raise t.exception
    except Exception as e:  # noqa: BLE001
      raise self._save_error(getattr(self, "_pending", None), e) from e

  def restore(
    self,
    abstract_state: Any,
    step: int | None = None,
    check_meta: Callable[[dict], None] | None = None,
  ) -> tuple[Any, dict, dict]:
    """(state, meta, data_state) at `step` (default: the latest intact one) into the abstract
    target's shardings. `check_meta(meta)` runs before the state is read (e.g. a config
    comparison) and its errors propagate. Without `step`, an unreadable checkpoint is reported
    in one warning naming it, moved to `<dir>/../corrupt_checkpoints/` (so the step can be
    saved again), and the previous step is tried."""
    if step is not None:
      return self._restore_step(abstract_state, step, check_meta)
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self._with_fallback(steps, lambda s: self._restore_step(abstract_state, s, check_meta))

  def _restore_step(self, abstract_state, step, check_meta):
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if check_meta is not None:
      check_meta(meta)
    out = self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore(),
        data=ocp.args.JsonRestore(),
      ),
    )
    return out.state, out.meta, out.data

  def _with_fallback(self, steps: list[int], read: Callable[[int], Any]) -> Any:
    """read(step) for the newest step that reads; corrupt ones are warned about, set aside."""
    errors = []
    for step in reversed(steps):
      try:
        return read(step)
      except (CheckpointError, KeyboardInterrupt):
        raise
      except Exception as e:  # noqa: BLE001 - any read failure means "this step is unusable"
        errors.append(f"step {step}: {root_cause(e)}")
        older = [s for s in steps if s < step]
        log.warning(
          "checkpoint step %d in %s is unreadable (%s); %s",
          step,
          self.directory,
          root_cause(e),
          f"falling back to step {older[-1]}" if older else "no older checkpoint",
        )
        self.set_aside(step, self.directory.parent / "corrupt_checkpoints", "unreadable")
    raise CheckpointError(f"no intact checkpoint in {self.directory}: " + "; ".join(errors))

  def set_aside(self, step: int, into: pathlib.Path, why: str) -> pathlib.Path | None:
    """Moves a saved step out of the manager's directory into `into/<step>.<time>` (main
    process writes; every process forgets the step), so it is neither restored nor counted by
    keep-N, and the step can be saved again."""
    self.wait()
    src = self.directory / str(step)
    dst = pathlib.Path(into) / f"{step}.{int(time.time())}"
    if jax.process_index() == 0 and self._writable and src.exists():
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(src), str(dst))
      log.warning("moved %s checkpoint step %d to %s", why, step, dst)
    if self._writable and jax.process_count() > 1:
      # Every process calls this (both callers act on global values): none may reload the
      # step list before process 0 has moved the step.
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"ifp_jax set_aside {step}")
    self.manager.reload()
    return dst

  def read_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._save_error(getattr(self, "_pending", None), e) from e
    self.check()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_params(
  directory: str | pathlib.Path, abstract_params: Any, step: int | None = None
) -> tuple[Any, dict]:
  """Only the params sub-tree of a saved TrainState (no optimizer state is read into memory)."""
  ckpt = Checkpointer(directory, async_save=False, writable=False)

  def read(s: int):
    return ckpt.manager.restore(
      s,
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
          item={"params": abstract_params},
          restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
          partial_restore=True,
        ),
        meta=ocp.args.JsonRestore(),
      ),
    )

  if step is not None:
    restored = read(step)
  else:
    steps = ckpt.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {pathlib.Path(directory).absolute()}")
    restored = ckpt._with_fallback(steps, read)  # eval/generate: warn, never move files
  ckpt.close()
  return restored.state["params"], restored.meta


def _restore_arg(x: jax.ShapeDtypeStruct) -> ocp.ArrayRestoreArgs:
  return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)
