"""Regime (a), IFP whose head starts as a distillation of GRIFFIN's per-input selections
(train.warm_start='griffin', train/warm_start.py): masks that depend on the prompt from step 0,
where the calibration start (ifp_warm.py) stayed the same for every document."""

from configs.repro_smollm2.ifp import get_config as base_config

DISTILL_ROWS = 192  # of the 256 training documents: the held-out fifth picks the ridge


def get_config(train_jsonl: str = ""):
  c = base_config(train_jsonl)
  c.train.warm_start = "griffin"
  c.train.warm_start_rows = DISTILL_ROWS
  return c
