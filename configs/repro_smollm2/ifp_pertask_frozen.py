"""Regime (a), IFP per task (as ifp_pertask: the predictor reads only its domain's task sentence)
with the predictor's trunk frozen (train.freeze='llm,predictor_trunk'): its backbone and head_in
never move, so the head's centre, the mean of the distillation inputs' activations, stays their
mean, and the output kernel reads only what differs between the four task sentences.

Why: ifp_pertask trained its trunk, and its head input left the fixed centre (|mean h - c| =
15.0 for |h| = 17.9, the tasks 2.6 apart), so the kernel's common path acted as a fast second
bias again. Frozen, the per-task part of a score is W (h_t - c), learned at the kernel's LR.

Kernel LR 5e-3: Adam moves each kernel entry ~lr per step, so a task's scores move ~lr * |h_t -
c|_1 (~2.6 * sqrt(128) * 0.8 ~ 24 for the measured spread): ~0.12 per step, about the table
LR (1e-1) of the bias and of static_domain_tables, which the per-task part has to match.
"""

from configs.repro_smollm2.ifp_pertask import get_config as pertask_config

KERNEL_LR = 5e-3


def get_config(sft_jsonl: str = ""):
  c = pertask_config(sft_jsonl)
  c.train.freeze = "llm,predictor_trunk"
  c.sft.predictor_lr = c.cpt.predictor_lr = KERNEL_LR
  return c
