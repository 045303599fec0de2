"""Regime (b): the strongest static mask of regime (a) (static_soft_warm_lr100: a SoftTopK score
table from the calibration mask, LR 1e-1), the LLM trained with it."""

from configs.repro_smollm2.joint_common import joint
from configs.repro_smollm2.static_soft_warm_lr100 import get_config as static_config


def get_config(train_jsonl: str = ""):
  return joint(static_config(train_jsonl))
