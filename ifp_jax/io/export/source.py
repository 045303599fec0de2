"""What an export reads: an IFP model (config + params), its tokenizers (the LLM's and the
predictor's, the same one unless the predictor has its own) and the predictor's input length,
from a trained run or built around real SmolLM2 weights.

`from_run(workdir)` loads a launch.train WORKDIR (f32 compute: the exported model is compared
with transformers in f32, and unit selection must not depend on a bf16 rounding).
`smollm2_source(k)` puts the SmolLM2-135M-Instruct GGUF weights into an IFP model whose
predictor backbone is SmolLM2's first layers and whose head is randomly initialised, the same
placement `trainer.resolve_models` does for `model.init_from='smollm2'`: real weights to export
without a training run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from ifp_jax.data.tokenization import Tokenizer, load_tokenizer
from ifp_jax.model import predictor
from ifp_jax.model.config import PredictorHeadConfig
from ifp_jax.model.ifp_model import IFPConfig, init_params


@dataclasses.dataclass
class ExportSource:
  ifp: IFPConfig
  params: Any  # IFPModel params {'llm', 'predictor' | 'static_log_alpha'}, unboxed
  tokenizer: Tokenizer
  tokenizer_spec: str  # load_tokenizer spec, e.g. 'bytes', 'smollm2', 'hf:PATH'
  max_prompt_len: int  # predictor input length (instructions are cut to it)
  provenance: dict  # written to export_info.json
  # What the predictor reads instructions with (its own tokenizer, or None: the LLM's).
  predictor_tokenizer: Tokenizer | None = None
  predictor_tokenizer_spec: str | None = None

  def __post_init__(self):
    self.predictor_tokenizer = self.predictor_tokenizer or self.tokenizer
    self.predictor_tokenizer_spec = self.predictor_tokenizer_spec or self.tokenizer_spec


def from_run(workdir, step: int | None = None, mesh=None) -> ExportSource:
  from ifp_jax.infer.instruction_masks import max_prompt_len
  from ifp_jax.infer.run_loader import load_run

  run = load_run(workdir, step=step, mesh=mesh, dtype="float32")
  return ExportSource(
    ifp=run.ifp,
    params=run.params,
    tokenizer=run.tokenizer,
    tokenizer_spec=run.meta["tokenizer"],
    max_prompt_len=max_prompt_len(run.meta),
    provenance={"workdir": str(run.workdir), "step": run.step, "stage": run.meta.get("stage")},
    predictor_tokenizer=run.predictor_tokenizer,
    predictor_tokenizer_spec=run.meta.get("predictor_tokenizer") or run.meta["tokenizer"],
  )


def smollm2_source(
  k: int = 512,
  predictor_layers: int = 4,
  seed: int = 0,
  max_prompt_len: int = 128,
  head: PredictorHeadConfig | None = None,
) -> ExportSource:
  """SmolLM2-135M-Instruct as an IFP model (soft_topk, random predictor head)."""
  return pretrained_source("smollm2", k, predictor_layers, seed, max_prompt_len, head)


def pretrained_source(
  spec: str,
  k: int = 512,
  predictor_layers: int = 4,
  seed: int = 0,
  max_prompt_len: int = 128,
  head: PredictorHeadConfig | None = None,
) -> ExportSource:
  """Any model spec (`ifp_jax.io.models`) as an IFP model (soft_topk, random predictor head)."""
  head = head or PredictorHeadConfig()
  from ifp_jax.io.models import resolve_model
  from ifp_jax.model.predictor import backbone_from_llm

  model = resolve_model(spec, flag="--source")
  if model.tokenizer_spec is None:
    raise ValueError(f"--source={spec!r} has no tokenizer (tokenizer.json) to export with")
  llm, llm_params, path = model.cfg, model.params, model.path
  ifp = IFPConfig(
    llm=llm,
    predictor=llm.replace(num_hidden_layers=predictor_layers),
    head=head,
    mask_kind="soft_topk",
    k=k,
  )
  abstract = nn.unbox(jax.eval_shape(lambda: init_params(ifp, jax.random.key(seed))))
  head_params = _init_head(abstract["predictor"], jax.random.key(seed), head)
  params = {
    "llm": llm_params,
    "predictor": {"backbone": backbone_from_llm(llm_params, predictor_layers), **head_params},
  }
  _check_structure(params, abstract)
  return ExportSource(
    ifp=ifp,
    params=jax.device_put(params),
    tokenizer=load_tokenizer(model.tokenizer_spec),
    tokenizer_spec=model.tokenizer_spec,
    max_prompt_len=max_prompt_len,
    provenance={"source": f"{spec} ({path and path.name}) + random predictor head", "seed": seed},
  )


def _init_head(abstract_predictor: dict, rng, head: PredictorHeadConfig) -> dict:
  """The head's initialisers of `predictor.SparsityPredictor`, on numpy."""
  r_in, r_out = jax.random.split(rng)
  shape_in = abstract_predictor["head_in"]["kernel"].shape
  shape_out = abstract_predictor["head_out"]["kernel"].shape
  out = {
    "head_in": jax.tree.map(np.asarray, predictor.head_in_init(r_in, *shape_in)),
    "head_out": {
      "kernel": np.asarray(nn.initializers.normal(head.out_init_std)(r_out, shape_out)),
      "bias": np.zeros(shape_out[1], np.float32),
    },
  }
  if "head_center" in abstract_predictor:
    out["head_center"] = np.zeros(abstract_predictor["head_center"].shape, np.float32)
  return out


def _check_structure(params: Any, abstract: Any) -> None:
  got = jax.tree.map(np.shape, params)
  want = jax.tree.map(lambda x: tuple(x.shape), abstract)
  if got != want:
    raise ValueError(f"IFP params do not match the model's tree: {got} vs {want}")
