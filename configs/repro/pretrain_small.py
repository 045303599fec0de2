"""Miniature reproduction, dense pretraining at d_ff = k (the start of dense_small)."""

from configs.repro.common import K, pretrain_config


def get_config():
  return pretrain_config(K)
