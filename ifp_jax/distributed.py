"""Multi-process runtime init: one CPU, localhost processes, Slurm, or TPU VM autodetect."""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def initialize() -> None:
  """Calls jax.distributed.initialize when the environment describes several processes.

  - explicit: IFP_COORDINATOR=host:port, IFP_NUM_PROCESSES, IFP_PROCESS_ID (localhost tests);
  - Slurm (SLURM_NTASKS > 1) and TPU VM slices: JAX's own cluster autodetection;
  - otherwise single process, nothing to do.
  """
  if os.environ.get("IFP_COORDINATOR"):
    jax.distributed.initialize(coordinator_address=os.environ["IFP_COORDINATOR"],
                               num_processes=int(os.environ["IFP_NUM_PROCESSES"]),
                               process_id=int(os.environ["IFP_PROCESS_ID"]))
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 or os.environ.get("TPU_WORKER_HOSTNAMES"):
    jax.distributed.initialize()
  else:
    return
  log.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
