"""A run directory's own records, kept across invocations: the workdir lock, summary.json (stages
merged over runs), config.json + config_history/, and repair of a partial last JSONL line.

Written by the main process only; nothing here touches checkpoints (checkpointing.py).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import pathlib
import socket
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir (one line naming its pid and host)."""


class WorkdirLock:
  """An exclusive `flock` on `<workdir>/train.lock`, holding `{pid, host, started}`.

  The kernel drops the lock when its process dies (even by SIGKILL), so a lock file left by a
  dead process is simply taken over; a live holder makes `acquire` raise WorkdirLockedError.
  """

  def __init__(self, workdir: str | pathlib.Path):
    self.path = pathlib.Path(workdir) / LOCK_NAME
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirLockedError(
        f"workdir {self.path.parent} is in use by a running training job (pid "
        f"{holder.get('pid', '?')} on host {holder.get('host', '?')}, since "
        f"{holder.get('started', '?')}); wait for it to end or pass another --workdir"
      ) from None
    stale = _read_holder(fd)
    if stale.get("pid"):
      log.warning(
        "taking over the stale workdir lock of pid %s on %s (no longer running)",
        stale.get("pid"),
        stale.get("host"),
      )
    me = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # no holder recorded: a later run takes it silently
      os.close(self._fd)  # closing drops the flock
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _read_holder(fd: int) -> dict[str, Any]:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (ValueError, UnicodeDecodeError):
    return {}


def read_json(path: pathlib.Path) -> dict[str, Any]:
  """A JSON object from `path`; {} (with a warning) if it is missing, partial or not JSON."""
  try:
    value = json.loads(pathlib.Path(path).read_text())
  except FileNotFoundError:
    return {}
  except (ValueError, UnicodeDecodeError) as e:
    log.warning("%s is unreadable (%s); starting it afresh", path, e)
    return {}
  return value if isinstance(value, dict) else {}


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Write-then-rename, so a kill mid-write leaves the previous file, never a partial one."""
  tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
  tmp.write_text(text)
  os.replace(tmp, path)


def merge_summary(path: pathlib.Path, summary: dict[str, Any]) -> dict[str, Any]:
  """summary.json = the previous file's stages updated with this invocation's (a rerun of a
  finished job, or a resume, keeps the stages it did not run); other keys are this run's."""
  old = read_json(path)
  stages = dict(old.get("stages") or {})
  stages.update({k: v for k, v in summary.get("stages", {}).items() if v})
  merged = {**summary, "stages": stages}
  write_atomic(path, json.dumps(merged, indent=2))
  return merged


def write_config(workdir: pathlib.Path, config_json: str) -> pathlib.Path:
  """config.json = this invocation's config; every invocation's is kept in config_history/."""
  history = workdir / "config_history"
  history.mkdir(parents=True, exist_ok=True)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
  (history / f"config.{stamp}.json").write_text(config_json)
  write_atomic(workdir / "config.json", config_json)
  return workdir / "config.json"


def repair_jsonl(path: pathlib.Path) -> int:
  """Drops a partial last line (a kill mid-write) so appends start on a fresh line; returns the
  number of bytes dropped."""
  path = pathlib.Path(path)
  if not path.exists():
    return 0
  data = path.read_bytes()
  if not data or data.endswith(b"\n"):
    return 0
  keep = data.rfind(b"\n") + 1
  with open(path, "r+b") as f:
    f.truncate(keep)
  log.warning("%s: dropped a partial last line (%d bytes)", path, len(data) - keep)
  return len(data) - keep


def read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  """Rows of a JSONL file; undecodable lines (a partial write) are skipped."""
  rows = []
  with open(path, errors="replace") as f:
    for line in f:
      if line.strip():
        try:
          rows.append(json.loads(line))
        except ValueError:
          continue
  return rows
