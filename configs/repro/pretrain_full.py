"""Miniature reproduction, dense pretraining at d_ff = F (the start of dense_full, static, ifp)."""

from configs.repro.common import F, pretrain_config


def get_config():
  return pretrain_config(F)
