"""Regime (a), the GRIFFIN-distilled IFP with a centred head (model.head_center) whose output
bias trains at the strongest static table's LR (cpt.predictor_bias_lr = 1e-1, as
static_soft_warm_lr100.py).

Uncentred, the head's last-layer kernel reads an input that is 55% common to all prompts, so it
acts as a second, fast bias: the distilled IFP beat the static table partly through that step
size, and its masks ended 0.98-0.99 shared between documents. Centred, everything the prompts
share trains through the bias, at the static table's LR, and the kernel learns only what differs
between prompts. This run minus static_soft_warm_lr100 is then the value of per-prompt selection.
"""

from configs.repro_smollm2.ifp_distill import get_config as distill_config

SHARED_LR = 1e-1  # static_soft_warm_lr100's table LR


def get_config(train_jsonl: str = ""):
  c = distill_config(train_jsonl)
  c.model.head_center = True
  c.cpt.predictor_bias_lr = SHARED_LR
  return c
