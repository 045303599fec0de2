"""Regime (a), IFP warm start with a 10x predictor LR (1e-2): does a faster head learn the
per-input part that ifp_warm.py (1e-3) leaves at zero (its masks are the same for every
document, benchmarks/results/repro_smollm2/)?"""

from configs.repro_smollm2.ifp_warm import get_config as base_config


def get_config(train_jsonl: str = ""):
  c = base_config(train_jsonl)
  c.cpt.predictor_lr = 1e-2
  return c
