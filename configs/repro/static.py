"""Miniature reproduction, static pruning F -> k, from pretrain_full: one input-independent mask
per layer learned with HardConcrete + the Lagrangian sparsity constraint; top-k at inference.

The mask log-alphas train in the predictor's optimizer group. Tried on this run:
- the shared predictor LR 1e-3: Adam moves each log-alpha by at most ~1e-3 per step; the
  expected sparsity was still 0.03 at step 700 of 2100 (target 0.75 from step 420): trained
  almost dense, then cut to top-k at eval;
- 2e-2: the sparsity lagged the ramp, the multiplier piled up (lambda1 -9.6) and then drove it
  past the target (0.88 and rising at step 775: training with ~60 units, eval with k = 128).
Hence a faster mask LR and a slower ramp (40% of the steps), so the masks track the target.
"""

from configs.repro.common import base_config


def get_config():
  c = base_config()
  c.model.mask_kind = "static"
  c.cpt.predictor_lr = 5e-2
  c.sft.predictor_lr = 5e-2
  c.train.target_warmup_frac = 0.4
  return c
