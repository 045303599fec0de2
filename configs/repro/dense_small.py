"""Miniature reproduction, dense-small: a dense model of width d_ff = k (the activated size of
the pruned methods), from pretrain_small."""

from configs.repro.common import K, base_config


def get_config():
  c = base_config()
  c.model.mask_kind = "none"
  c.model.llm.intermediate_size = K
  return c
