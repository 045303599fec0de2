"""Regime (b): IFP as ifp_distill (GRIFFIN-distilled head, predictor reads chunk 1, its mask
prunes chunk 2), the LLM trained with it. Does per-prompt selection help once the LLM adapts to
the masks it is given?"""

from configs.repro_smollm2.ifp_distill import get_config as distill_config
from configs.repro_smollm2.joint_common import joint


def get_config(train_jsonl: str = ""):
  return joint(distill_config(train_jsonl))
