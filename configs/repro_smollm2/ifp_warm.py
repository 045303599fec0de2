"""Regime (a), ifp with a calibration warm start (train/warm_start.py): as ifp.py, but the
initial masks are the calibration-static mask of the training documents' first 64 rows."""

from configs.repro_smollm2.ifp import get_config as base_config


def get_config(train_jsonl: str = ""):
  c = base_config(train_jsonl)
  c.train.warm_start = "calibration"
  c.train.warm_start_rows = 64
  return c
