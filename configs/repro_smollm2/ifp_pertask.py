"""Regime (a), IFP trained per task: the predictor reads only its domain's task sentence
(`ifp_jax/evals/domains.py DOMAIN_TASKS`) and its mask prunes that domain's document, as SFT
records {prompt: task sentence, response: document} (the config argument: a JSONL that
benchmarks/repro_smollm2.py writes from the same training documents). Otherwise as
ifp_centred: GRIFFIN-distilled, centred head, the same LRs, steps and batch size.

Centred because the four task sentences' head inputs are 98.9% common: uncentred (as
ifp_distill), the kernel's common path moved every score at once and the run diverged (loss
4.56 at step 10, 11.08 at step 15, gradient norm 153; a random mask scores ~14).

Reading a chunk, the predictor sees 160 noisy inputs in 40 steps, and its per-input masks did
not beat its own mean mask. Reading the task sentence it sees 4 clean ones, the paper's per-task
mode: can it learn one mask per domain, up to static_domain_tables, the per-task upper bound?
"""

from configs.repro_smollm2.common import STEPS
from configs.repro_smollm2.ifp_centred import get_config as centred_config
from ifp_jax.data.pipeline import source_config


def get_config(sft_jsonl: str = ""):
  c = centred_config(sft_jsonl)
  c.data.sft.sources = {
    "domains": source_config("jsonl_sft", [sft_jsonl], eval_fraction=0.0),
  }
  c.sft.steps, c.cpt.steps = STEPS, 0
  c.sft.predictor_lr = c.cpt.predictor_lr
  c.sft.predictor_bias_lr = c.cpt.predictor_bias_lr
  c.sft.llm_lr = c.cpt.llm_lr
  c.sft.warmup_steps = c.cpt.warmup_steps
  return c
