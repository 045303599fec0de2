"""Regime (b), second stage: SFT after the joint CPT of configs/repro_smollm2/joint_*.py, as the
paper trains (CPT with chunk routing, then SFT where the predictor reads each prompt).

benchmarks/repro_smollm2.py starts each `joint_*_sft` run from its `joint_*` run's last (CPT)
checkpoint, so the CPT stage is not repeated; `train.allow_config_change` lets that resume add
the SFT stage and its sources. SFT data (one third each): ShareGPT (user turn, answer) pairs of
the 'calib' split (never a held-out 'chat' document; the benchmark writes them next to the
training documents as train_sft_chat.jsonl), the skill suite and reasoning-gym arithmetic and
GSM word problems; launch.eval scores the held-out items of the last two (exact match and
answer NLL) and MMLU. Mask LRs as in the CPT stage; the LLM at SmolLM2's SFT LR (5e-5).
"""

import pathlib

from configs.repro_smollm2.common import STEPS
from ifp_jax.data.pipeline import source_config

SFT_CHAT_JSONL = "train_sft_chat.jsonl"  # next to the config argument (the CPT documents)
MATH_TASKS = ("basic_arithmetic", "gsm_symbolic")  # ifp_jax/evals/math_gym.py DEFAULT_TASKS


def with_sft(c, train_jsonl: str):
  """Joint CPT config `c` plus its SFT stage (STEPS steps, the same batch shape)."""
  chat = str(pathlib.Path(train_jsonl).parent / SFT_CHAT_JSONL)
  c.data.sft.sources = {
    "chat": source_config("jsonl_sft", [chat], eval_fraction=0.0),
    "skills": source_config("skills", num_train=1000, num_eval=200, seed=0),
    "math": source_config("reasoning_gym", tasks=MATH_TASKS, size=500, eval_size=100, seed=0),
  }
  c.sft.steps = STEPS
  c.sft.warmup_steps = c.cpt.warmup_steps
  c.sft.predictor_lr = c.cpt.predictor_lr
  c.sft.predictor_bias_lr = c.cpt.predictor_bias_lr
  # c.sft.llm_lr stays configs/smollm2_135m.py's 5e-5 (half the CPT LR, as SmolLM2's recipe)
  c.train.allow_config_change = "sft,data.sft"  # resume from the CPT run adds this stage
  return c
