"""Miniature reproduction, dense-full: the unpruned model (d_ff = F, no predictor), from
pretrain_full."""

from configs.repro.common import base_config


def get_config():
  c = base_config()
  c.model.mask_kind = "none"
  return c
