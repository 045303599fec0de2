"""Regime (b), first stage only: joint CPT with chunk routing, the LLM trains together with the
masks (the paper trains both; regime (a) freezes the LLM). Same documents, batches, steps and
mask LRs as regime (a); the LLM at SmolLM2's gentle CPT LR (configs/smollm2_135m.py)."""

LLM_LR = 1e-4


def joint(c):
  """Regime (a) config `c` with the LLM unfrozen."""
  c.train.freeze = ""
  c.cpt.llm_lr = LLM_LR
  return c
