"""Our weights in transformers' PyTorch Llama, for side-by-side benchmarks (train_throughput.py,
inference_bench.py). Import this before anything else loads torch: it sets libgomp's wait
policy first."""

from __future__ import annotations

import os

# libgomp's spin-waiting threads make torch 4-8x slower on a shared, oversubscribed CPU (2 cores,
# load 7: 20-48 s vs 5.5 s per SmolLM2 step); passive waiting gives the peer its best case.
# Must be set before torch loads libgomp; export OMP_WAIT_POLICY=ACTIVE to measure the other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ifp_jax.io import hf as hf_io  # noqa: E402
from ifp_jax.model.config import LlamaConfig  # noqa: E402


def hf_config(cfg: LlamaConfig) -> transformers.LlamaConfig:
  d = cfg.to_hf_dict()
  d.pop("torch_dtype", None)
  return transformers.LlamaConfig(**d, attn_implementation="sdpa")


def load_weights(module: torch.nn.Module, named: dict, what: str) -> None:
  """`named` (HF name -> array) into `module`; every weight but a tied lm_head must be there."""
  missing, unexpected = module.load_state_dict(
    {k: torch.from_numpy(np.array(v)) for k, v in named.items()}, strict=False
  )
  missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embedding
  if missing or unexpected:
    raise RuntimeError(f"{what}: missing {missing[:4]}, unexpected {unexpected[:4]}")


def causal_lm(cfg: LlamaConfig, params: dict, what: str = "llm") -> transformers.LlamaForCausalLM:
  """transformers.LlamaForCausalLM (sdpa attention, f32, eval mode) holding `params`."""
  model = transformers.LlamaForCausalLM(hf_config(cfg))
  load_weights(model, dict(hf_io.params_to_hf(cfg, params)), what)
  return model.eval()
