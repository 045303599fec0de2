"""Regime (a), the per-task upper bound of a static mask: one static SoftTopK table per domain,
each trained like static_soft_warm_lr100 (calibration warm start from its own domain, LR 1e-1,
40 steps) on its own domain's training documents only; each domain is scored with its own
table. benchmarks/repro_smollm2.py trains one run per domain with this config.

It knows the domain label and gets 4x the steps of the shared table, so it bounds from above
what one mask per task can gain here: if it does not beat the shared table, per-task selection
has no headroom in this miniature and IFP cannot be shown to win by it."""

from configs.repro_smollm2.static_soft_warm_lr100 import get_config as shared_table_config


def get_config(train_jsonl: str = ""):
  return shared_table_config(train_jsonl)
