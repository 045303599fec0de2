"""Regime (b) upper bound: the full model (every FFN unit), fine-tuned on the same batches."""

from configs.repro_smollm2.common import frozen_base_config
from configs.repro_smollm2.joint_common import joint


def get_config(train_jsonl: str = ""):
  c = joint(frozen_base_config(train_jsonl))
  c.model.mask_kind = "none"
  return c
