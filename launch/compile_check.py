"""Compile the train step for target meshes on fake CPU devices; print per-device memory.

  # one target: N fake devices, the config's mesh (or --mesh)
  python -m launch.compile_check --config=configs/paper_9b_to_3b.py:h100x8 --num_devices=8
  # every recipe of a config file (RECIPES dict: devices, processes, hbm_gib), as a table
  python -m launch.compile_check --config=configs/paper_9b_to_3b.py --recipes=all

Nothing is allocated: see ifp_jax/train/compile_check.py. Each device count runs in its own child
process (the fake device count is fixed when JAX starts), bounded by --timeout.
A config whose shapes do not divide the mesh fails before compiling, naming the field
(ifp_jax/train/validate.py), with exit status 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/tiny.py", "Experiment config file.")
flags.DEFINE_integer(
  "num_devices", None, "Fake CPU devices (default: the mesh's size, or the recipe's device count)."
)
flags.DEFINE_integer(
  "num_processes",
  None,
  "Processes of the target job (for the batch checks; default: the recipe's, else 1).",
)
flags.DEFINE_string("mesh", None, "Override config.mesh, e.g. '1,8,1'.")
flags.DEFINE_enum("stage", "cpt", ["cpt", "sft"], "Which stage's batch shapes to compile.")
flags.DEFINE_string(
  "recipes",
  None,
  "'all' or comma-separated names of the config file's "
  "RECIPES: one child process each, then a markdown table.",
)
flags.DEFINE_float("hbm_gib", None, "Device memory to compare the peak against (GiB).")
flags.DEFINE_integer("timeout", 1200, "Seconds per child process.")
flags.DEFINE_string("json_out", None, "Write the report as JSON here (child mode).")

_CHILD = "IFP_COMPILE_CHECK_CHILD"


def _config_file_and_recipe() -> tuple[str, str | None]:
  spec = config_flags.get_config_filename(FLAGS["config"])
  path, _, recipe = spec.partition(":")
  return path, recipe or None


def _recipes(path: str) -> dict:
  spec = importlib.util.spec_from_file_location("_compile_check_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return getattr(module, "RECIPES", {})


def _passthrough_args() -> list[str]:
  """Command-line config overrides (--config.x.y=v) to forward to children."""
  return [a for a in sys.argv[1:] if a.startswith("--config.")]


def _child(
  config_spec: str, num_devices: int, num_processes: int, json_out: str, extra: list[str]
) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **{_CHILD: "1"})
  env["XLA_FLAGS"] = " ".join(
    [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    + [f"--xla_force_host_platform_device_count={num_devices}"]
  )
  cmd = [
    sys.executable,
    "-m",
    "launch.compile_check",
    f"--config={config_spec}",
    f"--num_devices={num_devices}",
    f"--num_processes={num_processes}",
    f"--stage={FLAGS.stage}",
    f"--json_out={json_out}",
    *extra,
  ]
  if FLAGS.mesh:
    cmd.append(f"--mesh={FLAGS.mesh}")
  if FLAGS.hbm_gib:
    cmd.append(f"--hbm_gib={FLAGS.hbm_gib}")
  return subprocess.run(cmd, env=env, timeout=FLAGS.timeout, text=True, capture_output=True)


def _run_children(targets: list[tuple[str, str, int, int, float | None]]) -> int:
  from ifp_jax.train.compile_check import Report, describe, markdown_table

  rows, status = [], 0
  with tempfile.TemporaryDirectory() as tmp:
    for name, spec, devices, processes, hbm in targets:
      out = os.path.join(tmp, f"{name}.json")
      print(f"[compile_check] {name}: {devices} fake devices ...", file=sys.stderr, flush=True)
      try:
        res = _child(spec, devices, processes, out, _passthrough_args())
      except subprocess.TimeoutExpired:
        print(f"[compile_check] {name}: timed out after {FLAGS.timeout}s", file=sys.stderr)
        status = status or 1
        continue
      if res.returncode != 0:
        sys.stderr.write(res.stderr[-4000:])
        print(f"[compile_check] {name}: failed (exit {res.returncode})", file=sys.stderr)
        status = status or res.returncode
        continue
      with open(out) as f:
        d = json.load(f)
      d.pop("peak_bytes")
      report = Report(**d)
      print(describe(report), file=sys.stderr)
      rows.append((name, report, hbm))
  if rows:
    print(markdown_table(rows))
  return status


def main(argv):
  del argv
  path, recipe = _config_file_and_recipe()
  recipes = _recipes(path)
  if os.environ.get(_CHILD):
    return _child_main()
  if FLAGS.recipes:
    names = list(recipes) if FLAGS.recipes == "all" else FLAGS.recipes.split(",")
    unknown = [n for n in names if n not in recipes]
    if unknown:
      raise app.UsageError(f"{path} has no RECIPES {unknown}; it has {sorted(recipes)}")
    targets = [
      (
        n,
        f"{path}:{n}",
        int(recipes[n]["devices"]),
        int(FLAGS.num_processes or recipes[n].get("processes", 1)),
        FLAGS.hbm_gib or recipes[n].get("hbm_gib"),
      )
      for n in names
    ]
  else:
    r = recipes.get(recipe, {}) if recipe else {}
    devices = FLAGS.num_devices or r.get("devices")
    if devices is None:
      mesh = _mesh() or tuple(FLAGS.config.mesh)
      if -1 in mesh:
        raise app.UsageError(f"mesh {mesh} has a -1 entry: pass --num_devices")
      devices = 1
      for s in mesh:
        devices *= int(s)
    spec = f"{path}:{recipe}" if recipe else path
    targets = [
      (
        recipe or os.path.basename(path),
        spec,
        int(devices),
        int(FLAGS.num_processes or r.get("processes", 1)),
        FLAGS.hbm_gib or r.get("hbm_gib"),
      )
    ]
  sys.exit(_run_children(targets))


def _mesh() -> tuple[int, ...] | None:
  return tuple(int(x) for x in FLAGS.mesh.split(",")) if FLAGS.mesh else None


def _child_main() -> None:
  import jax

  from ifp_jax.train import compile_check, validate

  config = FLAGS.config
  if FLAGS.mesh:
    config.mesh = _mesh()
  config.lock()
  if jax.device_count() != FLAGS.num_devices:
    raise SystemExit(
      f"expected {FLAGS.num_devices} devices, JAX has {jax.device_count()} "
      "(XLA_FLAGS must be set before JAX starts)"
    )
  try:
    report = compile_check.compile_train_step(
      config, stage=FLAGS.stage, process_count=FLAGS.num_processes or 1
    )
  except validate.ConfigValidationError as e:
    print(f"compile_check: {e}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.json_out:
    compile_check.write_json(FLAGS.json_out, report)
  else:
    print(compile_check.describe(report))


if __name__ == "__main__":
  app.run(main)
