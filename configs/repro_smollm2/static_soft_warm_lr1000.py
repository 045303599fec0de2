"""Regime (a), the static SoftTopK control at 1000x IFP's LR (1.0; static_soft_warm.at_lr)."""

from configs.repro_smollm2.static_soft_warm import at_lr


def get_config(train_jsonl: str = ""):
  return at_lr(train_jsonl, 1.0)
