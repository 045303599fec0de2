"""Regime (a), static: one learned mask (HardConcrete + Lagrangian, top-k at inference) on
frozen SmolLM2 (common.py). Mask LR 5e-2 and a 40% target ramp, as configs/repro/static.py."""

from configs.repro_smollm2.common import frozen_base_config


def get_config(train_jsonl: str = ""):
  c = frozen_base_config(train_jsonl)
  c.model.mask_kind = "static"
  c.cpt.predictor_lr = 5e-2
  c.train.target_warmup_frac = 0.4
  return c
