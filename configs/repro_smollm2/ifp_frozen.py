"""Regime (a), IFP per input (the predictor reads chunk 1 of a document, as ifp_centred: GRIFFIN-
distilled, centred head, bias at the static table's LR) with the predictor's trunk frozen
(train.freeze='llm,predictor_trunk'): only the head's output layer learns, on fixed features
whose mean is the head's centre, so the kernel learns only what differs between prompts.

ifp_centred trained its trunk too; its masks ended 0.985 shared between documents and its per-
input masks did not beat its own mean mask. Kernel LR 5e-3 as ifp_pertask_frozen.py (why there).
"""

from configs.repro_smollm2.ifp_centred import get_config as centred_config
from configs.repro_smollm2.ifp_pertask_frozen import KERNEL_LR


def get_config(train_jsonl: str = ""):
  c = centred_config(train_jsonl)
  c.train.freeze = "llm,predictor_trunk"
  c.cpt.predictor_lr = KERNEL_LR
  return c
