"""python -m launch.train --config=configs/tiny.py --workdir=DIR [--config.cpt.steps=...]"""

from __future__ import annotations

import json
import logging

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
  from ifp_jax.train import distributed

  distributed.initialize()
  from ifp_jax.train.trainer import Trainer, kept_fraction

  config = FLAGS.config
  config.lock()
  trainer = Trainer(config, FLAGS.workdir)
  summary = trainer.run(max_steps=FLAGS.max_steps)
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
  app.run(main)
