"""python -m launch.train --config=configs/tiny.py --workdir=DIR [--config.cpt.steps=...]"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/tiny.py", "Experiment config file.")
flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, plots).", required=True)
flags.DEFINE_integer("max_steps", None, "Stop after this many more steps (for smoke tests).")


def main(argv):
  del argv
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax/TFDS chatter; ours stays at INFO
  logging.getLogger("ifp_jax").setLevel(logging.INFO)
  from ifp_jax.train import allocator, distributed

  logging.getLogger("ifp_jax").info("allocator: %s", allocator.describe())

  distributed.initialize()
  from ifp_jax.train.checkpointing import CheckpointError
  from ifp_jax.train.run_files import WorkdirLockedError
  from ifp_jax.train.trainer import DivergenceError, Trainer, kept_fraction
  from ifp_jax.train.validate import ConfigValidationError

  if FLAGS.max_steps is not None and FLAGS.max_steps < 0:
    raise app.UsageError(f"--max_steps={FLAGS.max_steps} must be >= 0")
  # Orbax logs a failed async save as pages of asyncio tracebacks; the one-line cause is ours.
  logging.getLogger("absl").addFilter(lambda r: "orbax" not in r.pathname)
  config = FLAGS.config
  config.lock()
  try:
    trainer = Trainer(config, os.path.expanduser(FLAGS.workdir))
    summary = trainer.run(max_steps=FLAGS.max_steps)
  except DivergenceError as e:
    print(f"launch.train: {e}", file=sys.stderr, flush=True)
    sys.exit(3)
  except (CheckpointError, WorkdirLockedError, ConfigValidationError) as e:
    print(f"launch.train: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  if trainer.is_main:
    print("\n=== ifp_jax training summary ===")
    for name, s in summary["stages"].items():
      if s:
        line = (
          f"{name}: loss {s['first_loss']:.4f} (step {s['first_step']}) -> "
          f"{s['last_loss']:.4f} (step {s['last_step']})"
        )
        if s.get("eval_loss_hard_masks") is not None:
          line += f"; held-out loss with hard masks {s['eval_loss_hard_masks']:.4f}"
        if s.get("heldout_text_loss") is not None:
          line += f"; held-out CPT text loss {s['heldout_text_loss']:.4f}"
        skipped = s.get("data_skipped") or {}
        if any(skipped.values()):
          line += (
            f"; data skipped: {skipped.get('malformed_lines', 0)} malformed lines, "
            f"{skipped.get('binary_files', 0)} binary files"
          )
        print(line)
    print(
      f"kept FFN fraction: {kept_fraction(trainer.ifp):.3f} "
      f"(k={trainer.ifp.k} of {trainer.ifp.llm.intermediate_size} per layer, "
      f"mask kind {trainer.ifp.mask_kind})"
    )
    print(f"checkpoint: {summary['checkpoint']} (step {summary['latest_checkpoint_step']})")
    print(
      f"metrics: {trainer.workdir / 'metrics.jsonl'}; plot: "
      f"{trainer.workdir / 'loss_curve.png'}; summary: {trainer.workdir / 'summary.json'}"
    )
    logging.debug(json.dumps(summary))


if __name__ == "__main__":
  from ifp_jax.train import allocator

  allocator.reexec_with_mimalloc()  # before JAX starts: see allocator.py
  app.run(main)
