"""Regime (a), the static SoftTopK control (static_soft_warm.py) at a 10x learning rate
(1e-2): Adam moves each score-table entry by about the LR per step, while IFP's predictor moves
every score through its head's kernel. If the distilled IFP's lead over the static table is that
step size rather than per-prompt selection (its masks are 0.98-0.99 shared between documents),
this run closes it."""

from configs.repro_smollm2.static_soft_warm import get_config as base_config


def get_config(train_jsonl: str = ""):
  c = base_config(train_jsonl)
  c.cpt.predictor_lr = 1e-2
  return c
