"""Regime (a), IFP: the predictor (SoftTopK, k = 512) learns on frozen SmolLM2 (common.py)."""

from configs.repro_smollm2.common import frozen_base_config


def get_config(train_jsonl: str = ""):
  c = frozen_base_config(train_jsonl)
  c.model.mask_kind = "soft_topk"
  return c
