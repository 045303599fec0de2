"""Miniature reproduction, static pruning F -> k, from pretrain_full: one input-independent mask
per layer learned with HardConcrete + the Lagrangian sparsity constraint; top-k at inference."""
from configs.repro.common import base_config


def get_config():
  c = base_config()
  c.model.mask_kind = "static"
  return c
