"""The miniature reproduction (benchmarks/repro.py): one model shape, data mixture and token
budget shared by every run. The run files in this folder override only what defines a method.

As in the paper, every method starts from a *pretrained dense* checkpoint: `pretrain_full`
(d_ff = F) and `pretrain_small` (d_ff = k) are trained on CPT text only, for the same steps.
Then each method gets the same continued pre-training + SFT budget (`base_config`):
dense_full, static and ifp start from pretrain_full; dense_small from pretrain_small.
benchmarks/repro.py exports the pretrained runs to HF folders and passes
`--config.model.init_from=hf:DIR` to the method runs.

Shape: a 4-layer, 128-wide byte-level Llama with F = 512 FFN units per layer; the pruned
methods keep k = F/4 = 128 per layer, so dense-small (d_ff = 128) has the same activated size.
Data: CPT on Python stdlib source; SFT on a mixture of the built-in skill suite (3 domains,
14 skills) and two short reasoning-gym arithmetic tasks.
"""

from ifp_jax.data.pipeline import source_config
from ifp_jax.train.config import default_config, llama_fields

F = 512  # FFN units per layer of the full model
K = F // 4  # activated units per layer (= dense-small's d_ff)
PRETRAIN_STEPS = 1500  # dense pretraining (CPT text only) of pretrain_full / pretrain_small

# Short reasoning-gym problems a byte model of this size can learn. Short questions (two 1-digit
# terms) are common, so some held-out items repeat a training question: the eval leaves those
# out (~30% of 400 here) and reports how many it scored.
RG_TASKS = ("chain_sum", "basic_arithmetic")
RG_KWARGS = {
  "chain_sum": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2),
  "basic_arithmetic": dict(
    min_terms=2,
    max_terms=3,
    min_digits=1,
    max_digits=2,
    operators=("+", "-"),
    allow_parentheses=False,
    allow_negation=False,
  ),
}


def base_config():
  """A method run: continued pre-training then SFT, from a pretrained dense checkpoint."""
  c = default_config()
  c.seed = 0
  c.data.tokenizer = "bytes"
  c.data.cpt.sources.stdlib.options.max_files = 400
  c.data.sft.sources = {
    "skills": source_config("skills", weight=0.75, num_train=40000, num_eval=700, seed=0),
    "math": source_config(
      "reasoning_gym",
      weight=0.25,
      tasks=list(RG_TASKS),
      size=4000,
      eval_size=200,
      seed=0,
      task_kwargs=RG_KWARGS,
    ),
  }
  c.data.max_prompt_len = 64
  # Used when model.init_from is "" (pretraining); the method runs take the shape from init_from.
  c.model.llm = llama_fields(
    vocab_size=0,
    hidden_size=128,
    intermediate_size=F,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.02,
  )
  # Predictor backbone = the pretrained LLM's first layer (+ a random 2-layer head).
  c.model.predictor_init_layers = 1
  c.model.head_hidden = 128
  c.model.k = K
  c.model.eps = 0.1
  c.model.head_out_init_std = 0.5
  c.train.batch_size = 16
  c.train.seq_len = 128
  c.train.log_every = 25
  c.train.checkpoint_every = 500
  c.train.eval_rows = 512
  c.cpt.steps = 300
  c.cpt.llm_lr = 1e-3
  c.cpt.predictor_lr = 1e-3
  c.cpt.warmup_steps = 20
  c.sft.steps = 1800
  c.sft.llm_lr = 2e-3
  c.sft.predictor_lr = 1e-3
  c.sft.warmup_steps = 20
  return c


def pretrain_config(d_ff: int):
  """Dense pretraining from random init on the CPT text only."""
  c = base_config()
  c.model.mask_kind = "none"
  c.model.predictor_init_layers = 0
  c.model.llm.intermediate_size = d_ff
  c.seed = 1  # the method runs (seed 0) then read the corpus in another order
  c.cpt.steps = PRETRAIN_STEPS
  c.cpt.llm_lr = 3e-3
  c.sft.steps = 0
  return c
