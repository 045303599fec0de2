"""The documented default schema of a training job (ml_collections). Experiment files in
`configs/` call `default_config()` and override fields; the CLI overrides with --config.x.y=v.
"""

from __future__ import annotations

import ml_collections

from ifp_jax.data.pipeline import default_data_config
from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig
from ifp_jax.model.ifp_model import IFPConfig, mask_kind


def llama_fields(**overrides) -> ml_collections.ConfigDict:
  """LlamaConfig fields as a ConfigDict (rope_scaling and model_type come only from imported
  checkpoints, see model.init_from)."""
  base = LlamaConfig().to_dict()
  base.pop("rope_scaling")
  base.pop("model_type")
  base.pop("head_dim")
  base.update(overrides)
  return ml_collections.ConfigDict(base)


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, mask noise (fold_in(seed, step)) and data order
  c.data = default_data_config()  # tokenizer, sources per stage, chunking (ifp_jax/data)

  c.model = m = ml_collections.ConfigDict()
  # "" (random init) or a model spec (ifp_jax/io/models.py): "smollm2" | "gguf:PATH" | "hf:PATH"
  # (HF Llama / Qwen2 / Qwen3 dir) | a launch.train WORKDIR
  m.init_from = ""
  m.llm = llama_fields()  # architecture when init_from == ""; vocab_size 0 -> tokenizer's
  # Predictor backbone (ifp_jax/train/predictor_source.py):
  #   predictor_init_from ""   -> from the LLM, sharing its tokenizer: predictor_init_layers > 0
  #                               = the LLM's first N layers (architecture and weights), 0 = the
  #                               `model.predictor` architecture, randomly initialised;
  #   predictor_init_from SPEC -> a model of its own (a model spec, as init_from): its first
  #                               predictor_init_layers layers (0 = all) with its architecture,
  #                               vocab and weights, reading text with data.predictor_tokenizer
  #                               ("" = the tokenizer that comes with SPEC).
  m.predictor_init_from = ""  # "" (from the LLM) or a model spec, as init_from
  m.predictor_init_layers = 0  # see above (with predictor_init_from: 0 = all its layers)
  m.predictor = llama_fields(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
  )
  m.head_hidden = 128  # predictor head d_pred -> head_hidden -> L * d_ff (paper: 128)
  m.head_activation = "gelu"  # gelu | relu | silu | tanh | identity
  m.head_out_init_std = 0.02  # std of the head's last layer init
  # Subtract a fixed centre (the mean activation, set by train.warm_start='griffin') before the
  # head's last layer, so its kernel learns only per-prompt differences (PredictorHeadConfig).
  m.head_center = False
  m.mask_kind = "soft_topk"  # soft_topk | hard_concrete | static | static_soft_topk | none
  m.k = 64  # kept FFN units per layer (same in every layer)
  m.eps = 0.1  # SoftTopK temperature
  m.hc_init_log_alpha = 2.0  # HardConcrete / static: initial log-alpha offset
  m.dtype = "float32"  # compute dtype (bfloat16 on accelerators)
  m.param_dtype = "float32"  # parameter / master-weight dtype
  m.remat = "none"  # none | full | dots
  m.attention_impl = "auto"  # auto (per backend) | xla | dot_product (ifp_jax.model.attention)

  c.mesh = (-1, 1, 1)  # (data, fsdp, tensor); one entry may be -1

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 16  # global sequences per step (split evenly over hosts)
  t.seq_len = 128  # LLM tokens per row (CPT rows are cut into data.num_chunks chunks)
  t.log_every = 10  # steps between metrics.jsonl / TensorBoard / progress lines
  t.checkpoint_every = 200  # steps between checkpoints (also at stage ends and on SIGTERM)
  # Good checkpoints kept. A checkpoint is confirmed good by the next step's loss and gradient
  # (computed on its state), so the newest, unconfirmed one is kept on top of these.
  t.keep_checkpoints = 2
  t.async_checkpoint = True
  t.grad_clip = 1.0  # per optimizer group global-norm clip (0 = off)
  t.weight_decay = 0.0
  t.adam_b2 = 0.95
  t.lagrange_lr = 0.05  # gradient-ascent LR of the Lagrange multipliers (HardConcrete kinds)
  t.target_warmup_frac = 0.2  # HardConcrete target sparsity ramps over this fraction of steps
  t.freeze = ""  # comma list of llm, predictor, predictor_trunk (all but the head's output layer)
  t.eval_rows = 512  # held-out sample per stage (fixed rows of the eval split; 0 = no eval)
  t.eval_every = 0  # also evaluate it every N steps (a multiple of log_every; 0 = stage ends)
  # Divergence guards: a non-finite state, or a logged loss / gradient norm above these (0 = off),
  # or this many logged steps in a row with gradient norm exactly 0 (a dead model, loss = ln V)
  # stop the job; such a state is never saved over a good checkpoint (only aside, if asked).
  t.divergence_max_loss = 0.0
  t.divergence_max_grad_norm = 0.0
  t.divergence_dead_checks = 2
  t.save_diverged = True  # write the diverged state to <workdir>/diverged/ for diagnosis
  # Resume refuses config changes that alter the model or the state's meaning; list intended
  # ones here, comma-separated fields or prefixes (e.g. "cpt.steps,sft").
  t.allow_config_change = ""
  # Initial masks from calibration statistics (train/warm_start.py; fresh runs only): '' = the
  # paper's random init; 'calibration' = the pretrained LLM's mean GRIFFIN scores over the first
  # warm_start_rows rows of the training stream, z-scored per layer and times warm_start_scale;
  # 'griffin' (predictor kinds) = the head distilled from GRIFFIN's per-input selections.
  t.warm_start = ""
  t.warm_start_rows = 64
  t.warm_start_scale = 1.0

  for stage in ("cpt", "sft"):
    s = c[stage] = ml_collections.ConfigDict()
    s.steps = 100  # optimizer steps in this stage (0 skips it)
    s.llm_lr = 1e-3  # peak LR of the masked LLM
    s.predictor_lr = 1e-3  # peak LR of the predictor (and static mask log-alphas)
    # Peak LR of the predictor head's output bias (the part of the scores every prompt shares);
    # 0 = predictor_lr. A static score table learns fastest at ~1e-1 (repro_smollm2 LR sweep).
    s.predictor_bias_lr = 0.0
    s.warmup_steps = 10  # linear warm-up, then cosine decay to 10% within the stage
  return c


def build_ifp_config(
  c: ml_collections.ConfigDict, llm: LlamaConfig, predictor: LlamaConfig | None
) -> IFPConfig:
  m = c.model
  numerics = dict(dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
  numerics["attention_impl"] = m.get("attention_impl", "auto")
  uses_predictor = mask_kind(m.mask_kind).uses_predictor
  return IFPConfig(
    llm=llm.replace(**numerics),
    predictor=predictor.replace(**numerics) if (predictor and uses_predictor) else None,
    head=PredictorHeadConfig(
      hidden=m.head_hidden,
      activation=m.head_activation,
      out_init_std=m.head_out_init_std,
      center=bool(m.get("head_center", False)),
    ),
    mask_kind=m.mask_kind,
    k=m.k,
    eps=m.eps,
    hc_init_log_alpha=m.hc_init_log_alpha,
  )


def llama_from_fields(fields: ml_collections.ConfigDict, **overrides) -> LlamaConfig:
  d = fields.to_dict()
  d.update(overrides)
  return LlamaConfig(**d)
