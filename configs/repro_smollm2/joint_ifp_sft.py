"""Regime (b): joint_ifp's CPT, then SFT (configs/repro_smollm2/joint_sft.py)."""

from configs.repro_smollm2.joint_ifp import get_config as cpt_config
from configs.repro_smollm2.joint_sft import with_sft


def get_config(train_jsonl: str = ""):
  return with_sft(cpt_config(train_jsonl), train_jsonl)
