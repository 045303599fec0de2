"""IFPruning sparsity predictor in PyTorch: instruction -> kept FFN units per layer.

Self-contained (torch + transformers + safetensors; no ifp_jax): `launch.export --what=predictor`
copies this file verbatim into the export directory as `ifp_predictor.py`, next to

  backbone/               HF Llama directory of the predictor's decoder backbone
  head.safetensors        head_in.{weight,bias} [hidden, d], head_out.{weight,bias} [L*d_ff, hidden]
  predictor_config.json   num_layers, d_ff, k, head_activation, score_offset, max_prompt_len, ...
  tokenizer.json, tokenizer_config.json   the predictor's own tokenizer (the LLM's if shared)

Computation (the same as ifp_jax's predictor at eval):
  ids = tokenizer(instruction, add_special_tokens=False)[:max_prompt_len]  (no chat template)
  feat = backbone(ids).last_hidden_state[last token]          (after the final RMSNorm)
  scores = head_out(act(head_in(feat))) + score_offset  -> [L, d_ff]
  kept units = the k largest scores per layer (ties -> lower index), sorted ascending.

Use:
  from ifp_predictor import IFPPredictor, prune_llama
  pred = IFPPredictor.from_pretrained(EXPORT_DIR)
  units = pred.kept_units("Solve the arithmetic problem ...")      # LongTensor [L, k]
  small = prune_llama(full_llama, units)   # dense LlamaForCausalLM with intermediate_size = k
or `python ifp_predictor.py EXPORT_DIR "instruction"` to print the units as JSON.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from typing import Sequence

import torch
from safetensors.torch import load_file
from torch import nn

FORMAT = "ifp_jax.predictor/1"


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
  return nn.functional.gelu(x, approximate="tanh")  # flax/jax nn.gelu default (approximate)


ACTIVATIONS = {
  "gelu": _gelu_tanh,
  "relu": torch.relu,
  "silu": nn.functional.silu,
  "tanh": torch.tanh,
  "identity": lambda x: x,
}


def hard_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
  """Boolean mask [..., n] of the k largest scores per row; ties at the k-th value go to the
  lower index (the rule of ifp_jax.model.masking.hard_topk, so both pick identical units)."""
  kth = torch.topk(scores, k, dim=-1).values[..., k - 1 : k]
  above = scores > kth
  tied = scores == kth
  n_above = above.sum(-1, keepdim=True)
  tie_rank = torch.cumsum(tied.to(torch.int64), dim=-1)
  return above | (tied & (tie_rank <= k - n_above))


class IFPPredictor(nn.Module):
  """Backbone + 2-layer head; `kept_units(instructions)` -> indices [(B,) L, k]."""

  def __init__(self, backbone: nn.Module, tokenizer, config: dict):
    super().__init__()
    if config.get("format") != FORMAT:
      raise ValueError(
        f"predictor_config.json format {config.get('format')!r}; this file reads {FORMAT!r}"
      )
    if config["head_activation"] not in ACTIVATIONS:
      raise ValueError(f"unknown head_activation {config['head_activation']!r}")
    self.backbone, self.tokenizer, self.config = backbone, tokenizer, config
    d = backbone.config.hidden_size
    self.head_in = nn.Linear(d, config["head_hidden"])
    self.head_out = nn.Linear(config["head_hidden"], config["num_layers"] * config["d_ff"])
    self.act = ACTIVATIONS[config["head_activation"]]

  @classmethod
  def from_pretrained(cls, path: str, dtype: torch.dtype = torch.float32) -> "IFPPredictor":
    from transformers import AutoModel, AutoTokenizer

    with open(os.path.join(path, "predictor_config.json"), encoding="utf-8") as f:
      config = json.load(f)
    backbone = AutoModel.from_pretrained(os.path.join(path, config["backbone_dir"]), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = cls(backbone, tokenizer, config)
    head = load_file(os.path.join(path, "head.safetensors"))
    missing = model.load_state_dict({k: v.to(dtype) for k, v in head.items()}, strict=False)
    if missing.missing_keys and any(k.startswith("head_") for k in missing.missing_keys):
      raise ValueError(f"{path}/head.safetensors lacks {missing.missing_keys}")
    return model.to(dtype).eval()

  def encode(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, P] and lengths [B]: raw instruction tokens cut to max_prompt_len."""
    max_len, pad = self.config["max_prompt_len"], self.config["pad_token_id"]
    rows = []
    for i, text in enumerate(instructions):
      ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_len]
      if not ids:
        raise ValueError(f"instruction {i} is empty after tokenization: {text!r}")
      rows.append(ids)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    for i, r in enumerate(rows):
      ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, torch.tensor([len(r) for r in rows], dtype=torch.long)

  @torch.no_grad()
  def scores(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """ids [B, P] (right-padded; causal attention keeps pads invisible) -> scores [B, L, d_ff]."""
    hidden = self.backbone(input_ids=ids).last_hidden_state  # [B, P, d], final-normed
    feat = hidden[torch.arange(ids.shape[0]), lengths - 1].to(self.head_in.weight.dtype)
    scores = self.head_out(self.act(self.head_in(feat)))
    scores = scores.float() + self.config.get("score_offset", 0.0)
    return scores.reshape(ids.shape[0], self.config["num_layers"], self.config["d_ff"])

  def masks(self, instructions: str | Sequence[str]) -> torch.Tensor:
    """Binary masks [(B,) L, d_ff] with exactly k ones per layer."""
    single = isinstance(instructions, str)
    texts = [instructions] if single else list(instructions)
    m = hard_topk(self.scores(*self.encode(texts)), self.config["k"])
    return m[0] if single else m

  def kept_units(self, instructions: str | Sequence[str]) -> torch.Tensor:
    """Kept-unit indices [(B,) L, k], ascending within each layer."""
    m = self.masks(instructions)
    order = torch.argsort((~m).to(torch.int8), dim=-1, stable=True)
    return order[..., : self.config["k"]]


@torch.no_grad()
def prune_llama(
  model: nn.Module, units: torch.Tensor, scale: torch.Tensor | None = None
) -> nn.Module:
  """A copy of a full HF LlamaForCausalLM keeping FFN units `units` [L, k] (optionally scaling
  the kept down_proj columns by `scale` [L, k]): a dense Llama with intermediate_size = k."""
  units = torch.as_tensor(units, dtype=torch.long)
  layers = model.model.layers
  if units.ndim != 2 or units.shape[0] != len(layers):
    raise ValueError(f"units must be [layers={len(layers)}, k]; got {tuple(units.shape)}")
  k = units.shape[1]
  pruned = copy.deepcopy(model)
  pruned.config.intermediate_size = k
  for i, layer in enumerate(pruned.model.layers):
    mlp, idx = layer.mlp, units[i]
    for name in ("gate_proj", "up_proj"):
      old = getattr(mlp, name)
      new = nn.Linear(old.in_features, k, bias=False, dtype=old.weight.dtype)
      new.weight.copy_(old.weight[idx])
      setattr(mlp, name, new)
    old = mlp.down_proj
    new = nn.Linear(k, old.out_features, bias=False, dtype=old.weight.dtype)
    w = old.weight[:, idx]
    new.weight.copy_(w * scale[i].to(w.dtype) if scale is not None else w)
    mlp.down_proj = new
    mlp.intermediate_size = k
  return pruned


def main(argv: list[str]) -> int:
  if len(argv) < 3:
    print(f"usage: python {os.path.basename(argv[0])} EXPORT_DIR INSTRUCTION...", file=sys.stderr)
    return 2
  pred = IFPPredictor.from_pretrained(argv[1])
  units = pred.kept_units(argv[2:])
  print(json.dumps({"k": pred.config["k"], "kept_units": units.tolist()}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
