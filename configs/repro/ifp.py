"""Miniature reproduction, IFPruning F -> k, from pretrain_full: the predictor reads each
input's prompt (SFT) or the previous chunk (CPT) and SoftTopK keeps k units per layer;
evaluated per input and per task."""

from configs.repro.common import base_config


def get_config():
  c = base_config()
  c.model.mask_kind = "soft_topk"
  return c
