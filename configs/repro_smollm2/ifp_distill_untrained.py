"""The distilled head of ifp_distill.py before any training: everything frozen
(train.freeze='llm,predictor'), one step so the run writes its checkpoint. A training-free
selector that needs only the predictor, not the full model's prefill as GRIFFIN does."""

from configs.repro_smollm2.ifp_distill import get_config as base_config


def get_config(train_jsonl: str = ""):
  c = base_config(train_jsonl)
  c.train.freeze = "llm,predictor"
  c.cpt.steps = 1
  c.cpt.warmup_steps = 0
  return c
