"""benchmarks/repro_smollm2.py: SmolLM2-135M-Instruct, k = 512 of 1536, trained variants.

Regime (a), `frozen_base_config`: the LLM is frozen (train.freeze='llm'); only the static mask's
log-alphas or the IFP predictor (SmolLM2's first 4 layers + a random head) learn, by CPT with
chunk routing (2 chunks: the predictor reads chunk 1, its mask prunes chunk 2) on the
calibration split of the benchmark's domains (ifp_jax/evals/domains.py), written by the
benchmark as a JSONL file (the config argument). Every method: the same batches and steps.
"""

from configs.smollm2_135m import get_config as smollm2_config
from ifp_jax.data.pipeline import source_config

STEPS = 40  # CPT steps of regime (a) on the 2-core CPU machine; --scale raises it


def frozen_base_config(train_jsonl: str):
  if not train_jsonl:
    raise ValueError(
      "config argument: the JSONL of training documents (benchmarks/repro_smollm2.py)"
    )
  c = smollm2_config("cpu")
  c.seed = 0
  c.train.freeze = "llm"
  c.train.batch_size = 4
  c.train.seq_len = 256
  c.train.log_every = 5
  c.train.checkpoint_every = 1000
  c.train.eval_rows = 0
  c.data.num_chunks = 2
  c.data.cpt.sources = {
    "domains": source_config("text", [train_jsonl], text_field="text", eval_fraction=0.0)
  }
  c.cpt.steps = STEPS
  c.cpt.warmup_steps = 4
  c.sft.steps = 0
  return c


def with_warm_start(c):
  """The run `c` with its masks starting as the calibration-static mask of the training
  documents' first 64 rows (train/warm_start.py)."""
  c.train.warm_start = "calibration"
  c.train.warm_start_rows = 64
  return c
