"""ifp_pertask_frozen.py at 4x the steps (160): the budget of static_domain_tables (40 steps on
each of the 4 domains), so that the per-task predictor and the per-task upper bound compare at
equal training. The LR schedule stretches with the steps (warm-up 4, cosine to 10%)."""

from configs.repro_smollm2.common import STEPS
from configs.repro_smollm2.ifp_pertask_frozen import get_config as frozen_config


def get_config(sft_jsonl: str = ""):
  c = frozen_config(sft_jsonl)
  c.sft.steps = 4 * STEPS
  return c
