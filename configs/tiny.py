"""From scratch on CPU in minutes: CPT on the Python stdlib source, then SFT on the skill suite.

Byte tokenizer, a 4-layer 128-wide LLM with d_ff 384 of which k = 128 units stay on per layer,
and a 1-layer predictor. Shapes divide every mesh of 8 devices used in the tests.
SFT replays the CPT text (`replay`, 1 row in 5): without it the SFT stage on the narrow skill
suite destroys language modelling (held-out CPT text loss, see the README).
"""

import ml_collections

from ifp_jax.train.config import default_config, llama_fields


def get_config():
  c = default_config()
  c.data.tokenizer = "bytes"
  c.data.cpt.sources.stdlib.options.max_files = 400  # ~4 MB of source is plenty here
  # CPT replay during SFT: the same text source (same held-out files), 1 row in 5.
  c.data.sft.sources.replay = ml_collections.ConfigDict(c.data.cpt.sources.stdlib.to_dict())
  c.data.sft.sources.replay.weight = 0.25
  c.model.llm = llama_fields(
    vocab_size=0,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.02,
  )
  c.model.predictor = llama_fields(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
  )
  c.model.head_hidden = 128
  c.model.k = 128
  c.model.eps = 0.1
  c.model.head_out_init_std = 0.5
  c.train.batch_size = 16
  c.train.seq_len = 128
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.data.max_prompt_len = 64
  c.cpt.steps = 200
  c.cpt.llm_lr = 3e-3
  c.cpt.predictor_lr = 1e-3
  c.cpt.warmup_steps = 20
  c.sft.steps = 250
  c.sft.llm_lr = 2e-3
  c.sft.predictor_lr = 1e-3
  c.sft.warmup_steps = 10
  return c
