"""Multi-process runtime init: one CPU, localhost processes, Slurm, or TPU VM autodetect.

The launch scripts in launch/ set the environment (docs/scaling.md):
  local_multiprocess.sh  IFP_COORDINATOR, IFP_NUM_PROCESSES, IFP_PROCESS_ID (+ fake CPU devices)
  slurm_gpu.sbatch       srun tasks: JAX reads SLURM_* (coordinator = first node, one process per
                         task, and with one task per GPU each process takes GPU SLURM_LOCALID)
  tpu_vm.sh              IFP_DISTRIBUTED=1 on every worker: JAX reads the TPU VM metadata
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import jax

log = logging.getLogger(__name__)


def mode() -> str:
  """'explicit' | 'auto' | 'single': what `initialize` will do in this environment."""
  if os.environ.get("IFP_COORDINATOR"):
    return "explicit"
  if (
    os.environ.get("IFP_DISTRIBUTED", "") not in ("", "0")
    or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    or os.environ.get("TPU_WORKER_HOSTNAMES")
  ):
    return "auto"
  return "single"


def initialize() -> None:
  """Calls jax.distributed.initialize when the environment describes several processes.

  - explicit: IFP_COORDINATOR=host:port, IFP_NUM_PROCESSES, IFP_PROCESS_ID (localhost tests);
  - auto: IFP_DISTRIBUTED=1 (TPU VM slices, any cluster JAX detects), Slurm with
    SLURM_NTASKS > 1, or GKE TPU (TPU_WORKER_HOSTNAMES): JAX's own cluster autodetection;
  - otherwise single process, nothing to do.
  Must run before anything touches JAX's devices.
  """
  how = mode()
  if how == "explicit":
    jax.distributed.initialize(
      coordinator_address=os.environ["IFP_COORDINATOR"],
      num_processes=int(os.environ["IFP_NUM_PROCESSES"]),
      process_id=int(os.environ["IFP_PROCESS_ID"]),
    )
  elif how == "auto":
    jax.distributed.initialize()
  else:
    return
  _exit_hard_on_uncaught_exceptions()
  log.info(
    "jax.distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def _exit_hard_on_uncaught_exceptions() -> None:
  """A process that dies of an exception would otherwise hang at exit in jax.distributed's
  shutdown barrier (its peers wait in a collective for it): print the traceback and leave with
  os._exit(1), so launchers see the failure and stop the other processes."""
  previous = sys.excepthook

  def hook(kind, value, tb):
    try:
      previous(kind, value, tb)
    except Exception:  # noqa: BLE001 - fall back to the plain traceback
      traceback.print_exception(kind, value, tb)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(1)

  sys.excepthook = hook


def allgather_json(obj) -> list:
  """Every process's JSON-able `obj`, in process order (one item on a single process).

  Used for per-host state (data iterator positions) that process 0 writes into checkpoints:
  the JSON bytes travel as a padded uint8 array through `process_allgather`.
  """
  if jax.process_count() == 1:
    return [obj]
  import json

  import numpy as np
  from jax.experimental import multihost_utils

  raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([raw.size], np.int64))
  padded = np.zeros(int(np.max(sizes)), np.uint8)
  padded[: raw.size] = raw
  every = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(every[i, : int(sizes[i, 0])]).decode()) for i in range(len(every))]
