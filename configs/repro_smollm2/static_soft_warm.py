"""Regime (a), the static control of IFP: one learned score table through SoftTopK
(mask_kind='static_soft_topk', the mask machinery IFP uses), started from the calibration-static
mask (common.with_warm_start) at IFP's learning rate. If IFP's gain is a better shared selection
rather than per-prompt selection, this run matches it."""

from configs.repro_smollm2.common import frozen_base_config, with_warm_start


def get_config(train_jsonl: str = ""):
  c = frozen_base_config(train_jsonl)
  c.model.mask_kind = "static_soft_topk"
  return with_warm_start(c)


def at_lr(train_jsonl: str, lr: float):
  """The same table at another LR (static_soft_warm_lr*.py). Adam moves each table entry by
  about the LR per step, while IFP's predictor moves every score through its head's kernel: if
  the distilled IFP's lead over the table is that step size rather than per-prompt selection
  (its masks are 0.98-0.99 shared between documents), a faster table closes it."""
  c = get_config(train_jsonl)
  c.cpt.predictor_lr = lr
  return c
