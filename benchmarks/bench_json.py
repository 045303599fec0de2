"""`--json=FILE` output shared by the benchmark scripts: one JSON object per run with stable key
names (documented in benchmarks/README.md, "JSON output"), so results compare across commits."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any, Mapping


def write(path: str | os.PathLike | None, benchmark: str, machine: str, **figures: Any) -> None:
  """Writes {benchmark, date, command, machine, **figures} to `path` (nothing when None)."""
  if not path:
    return
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  record: Mapping[str, Any] = {
    "benchmark": benchmark,
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "command": " ".join(["python", *sys.argv]),
    "machine": machine,
    **figures,
  }
  path.write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")
  print(f"wrote {path}")


def key(label: str) -> str:
  """A stable snake_case key for a table label ('pruned / dense_k TTFT' ->
  'pruned_over_dense_k_ttft')."""
  out = label.lower().replace(" / ", "_over_").replace("+", "_")
  out = "".join(c if c.isalnum() else "_" for c in out)
  return "_".join(p for p in out.split("_") if p)
