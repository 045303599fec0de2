"""Regime (a), static with a calibration warm start (common.with_warm_start)."""

from configs.repro_smollm2.common import with_warm_start
from configs.repro_smollm2.static import get_config as base_config


def get_config(train_jsonl: str = ""):
  return with_warm_start(base_config(train_jsonl))
