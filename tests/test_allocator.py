"""train/allocator.py: the launchers re-execute themselves once under mimalloc, with the same
command line; IFP_ALLOCATOR=system opts out; a bad value is named."""

import os
import pathlib
import subprocess
import sys

from ifp_jax.train import allocator

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHILD = (
  "import sys; from ifp_jax.train import allocator; allocator.reexec_with_mimalloc(); "
  "maps = open('/proc/self/maps').read(); "
  "print('loaded' if 'libmimalloc' in maps else 'not-loaded', sys.argv[1:]); "
  "print(allocator.describe())"
)


def _run(**env_extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("IFP_ALLOCATOR", "LD_PRELOAD"))}
  env.update(env_extra)
  return subprocess.run(
    [sys.executable, "-c", CHILD, "a", "b c"], cwd=ROOT, env=env, capture_output=True, text=True
  )


def test_the_pinned_wheel_ships_the_library():
  path = allocator.library_path()
  assert path is not None and os.path.isfile(path), path


def test_reexec_loads_mimalloc_and_keeps_the_arguments():
  proc = _run()
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == ["loaded ['a', 'b c']", "mimalloc"], proc.stdout


def test_system_allocator_opt_out():
  proc = _run(IFP_ALLOCATOR="system")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [
    "not-loaded ['a', 'b c']",
    "system malloc (IFP_ALLOCATOR=system)",
  ], proc.stdout


def test_bad_switch_value_is_named():
  proc = _run(IFP_ALLOCATOR="jemalloc")
  assert proc.returncode != 0
  assert "IFP_ALLOCATOR='jemalloc'" in proc.stderr, proc.stderr
