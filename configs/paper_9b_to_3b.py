"""The paper's main setting at full size: a 9B masked LLM activating ~3B, a ~300M predictor.

LLM: 56 layers, d_model 2048, 16 query / 2 KV heads of 128, d_ff 24576 of which k = 6656 stay
on per layer (27%), vocab 128256 (a Llama-3-sized tokenizer; untied LM head). Parameters:
9.5B in total, 3.3B activated (2.8B in the layers + 0.5B embeddings and LM head).
Predictor: a 10-layer, 1024-wide decoder (8 heads of 128, d_ff 4096, ~300M with its
embeddings; the paper's is 302M) and the 1024 -> 128 -> 56 * 24576 head (176M).

Numerics: bf16 compute, f32 master weights and f32 Adam moments (Optax states mirror the params),
full remat of every layer. This file is a shape and sharding recipe: start from real weights
with --config.model.init_from=hf:DIR and --config.data.tokenizer=hf:DIR, and replace the
built-in CPT/SFT sources with your corpora (ifp_jax/data/pipeline.py, kind "tfds"). The
default tokenizer ("smollm2", 49152 ids, installed offline) only keeps the file runnable.

Recipes (`--config=configs/paper_9b_to_3b.py:NAME`), all (data, fsdp, tensor) with FSDP over
the fast interconnect and data parallelism across slower links; per-device memory from
`python -m launch.compile_check` is in docs/scaling.md:
  h100x8     1 node,  8 x H100 80GB   mesh (1, 8, 1)   batch 16 x 4096 tokens
  h100x16    2 nodes, 16 x H100 80GB  mesh (2, 8, 1)   batch 32 x 4096   (data across nodes)
  v5p_64     TPU v5p-64 = 32 chips (8 hosts, 95 GB HBM each)   mesh (1, 32, 1)   batch 64
  v5p_128    TPU v5p-128 = 64 chips (16 hosts)                 mesh (1, 64, 1)   batch 128
Shape constraints (ifp_jax/train/validate.py): tensor must divide 16 heads, d_ff,
k = 6656 = 2^9 * 13
and the vocab (tensor <= 8; the 2 KV heads are replicated for tensor > 2); fsdp must divide
d_model 2048 and the predictor's 1024; data * fsdp must divide the batch and be a multiple of
the process count.
"""

from ifp_jax.train.config import default_config, llama_fields

RECIPES = {
  # name: devices, processes (hosts or one per GPU), mesh, global batch, HBM per device (GiB)
  "h100x8": dict(devices=8, processes=1, mesh=(1, 8, 1), batch_size=16, hbm_gib=80),
  "h100x16": dict(devices=16, processes=2, mesh=(2, 8, 1), batch_size=32, hbm_gib=80),
  "v5p_64": dict(devices=32, processes=8, mesh=(1, 32, 1), batch_size=64, hbm_gib=95),
  "v5p_128": dict(devices=64, processes=16, mesh=(1, 64, 1), batch_size=128, hbm_gib=95),
}


def get_config(recipe: str = "h100x8"):
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
  r = RECIPES[recipe]
  c = default_config()
  c.data.tokenizer = "smollm2"  # placeholder: use the checkpoint's tokenizer (hf:DIR)
  c.data.num_chunks = 4  # CPT: 4 chunks of 1024 tokens, masks from chunk j used on chunk j+1
  c.data.max_prompt_len = 512
  c.model.llm = llama_fields(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=24576,
    num_hidden_layers=56,
    num_attention_heads=16,
    num_key_value_heads=2,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=False,
    initializer_range=0.02,
  )
  c.model.predictor_init_layers = 0
  c.model.predictor = llama_fields(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=10,
    num_attention_heads=8,
    num_key_value_heads=8,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
  )
  c.model.head_hidden = 128
  c.model.k = 6656
  c.model.eps = 0.1
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.remat = "full"
  c.mesh = r["mesh"]
  c.train.batch_size = r["batch_size"]
  c.train.seq_len = 4096
  c.train.log_every = 10
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 3
  c.cpt.steps = 20000
  c.cpt.llm_lr = 3e-5
  c.cpt.predictor_lr = 3e-4
  c.cpt.warmup_steps = 500
  c.sft.steps = 5000
  c.sft.llm_lr = 1e-5
  c.sft.predictor_lr = 1e-4
  c.sft.warmup_steps = 100
  return c
