"""benchmarks/repro.py reuses a finished run only when its config is the same, naming what
changed; fields added to the schema since it trained (at their defaults) do not stop reuse."""

import importlib
import json
import pathlib
import subprocess
import sys

import train_utils as tu

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CHANGES = """
import json, pathlib, sys
sys.path.insert(0, "benchmarks")
import repro
print(json.dumps(repro.config_changes(pathlib.Path(sys.argv[1]), "ifp", ["seed=3"])))
"""


def _changes(run_dir: pathlib.Path) -> tuple[list, list]:
  proc = subprocess.run(
    [sys.executable, "-c", _CHANGES, str(run_dir)],
    cwd=ROOT,
    env=tu.cli_env(PYTHONPATH=str(ROOT)),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_config_changes_name_fields_and_allow_new_ones(tmp_path):
  cfg = importlib.import_module("configs.repro.ifp").get_config()
  ran = json.loads(cfg.to_json_best_effort())
  ran["seed"] = 3  # overridden: not a change
  (tmp_path / "config.json").write_text(json.dumps(ran))
  assert _changes(tmp_path) == ([], [])
  del ran["model"]["predictor_init_from"]  # a field newer than the run
  ran["model"]["k"] = 7
  ran["train"]["retired_field"] = 1
  (tmp_path / "config.json").write_text(json.dumps(ran))
  changed, added = _changes(tmp_path)
  assert changed == [f"model.k: 7 -> {cfg.model.k!r}", "train.retired_field: 1 -> (gone)"]
  assert added == ["model.predictor_init_from"]
