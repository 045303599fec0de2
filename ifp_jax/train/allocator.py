"""Run the process under mimalloc (from the pinned `cmeel-mimalloc` wheel) instead of glibc malloc.

Why: XLA:CPU allocates each step's temporaries afresh. glibc serves every block over 32 MB with
mmap and unmaps it on free, so every train step faults in ~1.6 GB of new zeroed pages
(SmolLM2, 2 x 256: ~408k minor faults and ~0.8 s of kernel time per step). mimalloc with
purging off keeps freed memory for the next step: no faults, steps ~1.2x faster
(benchmarks/README.md "Allocator"). The allocator must be preloaded before the interpreter
starts, so `reexec_with_mimalloc` re-executes the same command line once with LD_PRELOAD set.

IFP_ALLOCATOR=system turns this off; an LD_PRELOAD that already names mimalloc is kept.
"""

from __future__ import annotations

import glob
import os
import sys
import sysconfig

ENV_SWITCH = "IFP_ALLOCATOR"  # "mimalloc" (default) | "system"
_REEXEC_MARK = "IFP_ALLOCATOR_REEXEC"  # set in the re-executed process: never loop


def library_path() -> str | None:
  """libmimalloc.so from the cmeel-mimalloc wheel in this environment, or None."""
  for key in ("purelib", "platlib"):
    hits = sorted(
      glob.glob(os.path.join(sysconfig.get_paths()[key], "cmeel.prefix/lib/libmimalloc.so*"))
    )
    if hits:
      return min(hits, key=len)  # libmimalloc.so, the unversioned link, when present
  return None


def active() -> bool:
  return "mimalloc" in os.environ.get("LD_PRELOAD", "")


def describe() -> str:
  """One line for run logs: which allocator this process runs on, and why."""
  if active():
    return "mimalloc"
  if os.environ.get(ENV_SWITCH) == "system":
    return f"system malloc ({ENV_SWITCH}=system)"
  if sys.platform != "linux" or library_path() is None:
    return "system malloc (cmeel-mimalloc not installed or not Linux)"
  return "system malloc"


def reexec_with_mimalloc() -> None:
  """Re-execute this command line under mimalloc (Linux only); returns when it cannot or
  need not (already active, switched off, not installed, or already re-executed once)."""
  choice = os.environ.get(ENV_SWITCH, "mimalloc")
  if choice not in ("mimalloc", "system"):
    # Called first thing by the entry points: a one-line exit, not a traceback.
    raise SystemExit(f"error: {ENV_SWITCH}={choice!r}; expected 'mimalloc' or 'system'")
  if choice == "system" or active() or os.environ.get(_REEXEC_MARK) or sys.platform != "linux":
    return
  lib = library_path()
  if lib is None:
    return
  env = dict(os.environ)
  env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
  env.setdefault("MIMALLOC_PURGE_DELAY", "-1")  # keep freed pages: the next step reuses them
  env[_REEXEC_MARK] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
