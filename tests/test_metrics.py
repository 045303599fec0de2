"""Training observability: the TensorBoard events a run writes, and what logging costs a job."""

import pathlib
import struct
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

_LOG_ONE_STEP = """
import pathlib, sys
from ifp_jax.train.metrics import MetricsLogger
m = MetricsLogger(pathlib.Path(sys.argv[1]), stream=open("/dev/null", "w"))
m.start_stage("cpt", 2)
m.log({"stage": "cpt", "step": 1, "loss": 2.5, "tokens_per_sec": 10.0}, remaining=1)
m.close()
print("torch imported:", "torch" in sys.modules)
"""


def _scalars(events_file: pathlib.Path) -> dict[str, float]:
  """The (tag -> value) scalars of a TensorBoard events file (TFRecord framing, parsed here)."""
  from tensorboardX.proto import event_pb2

  data, out, pos = events_file.read_bytes(), {}, 0
  while pos < len(data):
    (n,) = struct.unpack("<Q", data[pos : pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
    pos += 12 + n + 4  # length, its crc, the record, its crc
    for v in event.summary.value:
      out[v.tag] = v.simple_value
  return out


def test_a_fresh_job_logs_tensorboard_scalars_without_importing_torch(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-c", _LOG_ONE_STEP, str(tmp_path)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert "torch imported: False" in proc.stdout  # tensorboardX would import it (~3 s)
  (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
  assert _scalars(events) == {"cpt/loss": 2.5, "cpt/tokens_per_sec": 10.0}
  assert '"loss": 2.5' in (tmp_path / "metrics.jsonl").read_text()
