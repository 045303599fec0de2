"""The three exports: full masked LLM, per-instruction pruned dense Llamas, the predictor.

Every export writes into a temporary sibling of OUT (`writer.atomic_dir`) and ends with
`export_info.json` (what, source run and step, kept units, ...), then renames into place.
Tokenizer files are written and checked against the run's tokenizer before the rename.
"""

from __future__ import annotations

import functools
import pathlib
import re
import shutil
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.infer.instruction_masks import predict_masks, task_instruction
from ifp_jax.io.export import hf_tokenizer
from ifp_jax.io.export.source import ExportSource
from ifp_jax.io.export.writer import (
  COMPLETE_MARKER,
  DEFAULT_SHARD_BYTES,
  ExportError,
  atomic_dir,
  check_out,
  host_array,
  is_writer,
  save_safetensors,
  write_json,
  write_llama_config,
  write_llama_weights,
)
from ifp_jax.model import masking
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.gather import gather_ffn, gathered_config, kept_indices

FORMAT_VERSION = 1
PREDICTOR_FILE = "ifp_predictor.py"


@functools.lru_cache(maxsize=8)
def _jit_gather():
  return jax.jit(gather_ffn)


def write_model_dir(
  out_dir: pathlib.Path,
  src: ExportSource,
  cfg: LlamaConfig,
  llm_params: Any,
  *,
  dtype: str,
  max_shard_bytes: int,
  tokenizer_spec: str | None,
  probe_texts: Sequence[str],
  info: dict,
  on_tensor: Callable[[str], None] | None = None,
) -> None:
  """An HF LlamaForCausalLM directory: weights, config, generation config, tokenizer, info."""
  spec = tokenizer_spec or src.tokenizer_spec
  if is_writer():  # tokenizer first: a mismatch fails before minutes of weight writing
    hf_tokenizer.write_tokenizer_files(spec, out_dir, cfg.max_position_embeddings)
    hf_tokenizer.verify_tokenizer(out_dir, src.tokenizer, cfg.vocab_size, probe_texts)
  files = write_llama_weights(
    cfg,
    llm_params,
    out_dir,
    dtype=dtype,
    max_shard_bytes=max_shard_bytes,
    desc=out_dir.name,
    on_tensor=on_tensor,
  )
  write_llama_config(cfg, out_dir, dtype, src.tokenizer)
  write_json(
    out_dir / COMPLETE_MARKER,
    dict(
      info,
      format=f"ifp_jax.export/{FORMAT_VERSION}",
      dtype=dtype,
      tokenizer=spec,
      source=src.provenance,
      intermediate_size=cfg.intermediate_size,
      weight_files=files,
    ),
  )


def export_full(
  src: ExportSource,
  out,
  *,
  dtype: str = "float32",
  overwrite: bool = False,
  max_shard_bytes: int = DEFAULT_SHARD_BYTES,
  tokenizer_spec: str | None = None,
  on_tensor: Callable[[str], None] | None = None,
) -> pathlib.Path:
  """The masked LLM at full width (no mask applied) as an HF LlamaForCausalLM directory."""
  out = check_out(out, overwrite)
  with atomic_dir(out, overwrite) as tmp:
    write_model_dir(
      tmp,
      src,
      src.ifp.llm,
      src.params["llm"],
      dtype=dtype,
      max_shard_bytes=max_shard_bytes,
      tokenizer_spec=tokenizer_spec,
      probe_texts=(),
      on_tensor=on_tensor,
      info={"what": "full", "mask_kind": src.ifp.mask_kind, "k": src.ifp.k},
    )
  return out


# --- pruned ------------------------------------------------------------------------------------


def check_units(units: Any, num_layers: int, d_ff: int) -> np.ndarray:
  """Kept units per layer (array [L, k] or a list of per-layer lists) -> sorted int [L, k].

  An HF Llama has one intermediate_size, so every layer must keep the same number of units.
  """
  rows = [np.asarray(r).reshape(-1) for r in units]
  if len(rows) != num_layers:
    raise ExportError(f"kept units given for {len(rows)} layers; the model has {num_layers}")
  sizes = [len(r) for r in rows]
  if len(set(sizes)) != 1:
    raise ExportError(
      f"non-uniform k: layers keep {sizes} units; a pruned export is a standard HF Llama with "
      "one intermediate_size, so every layer must keep the same number of units"
    )
  arr = np.stack(rows)
  if not np.issubdtype(arr.dtype, np.integer):
    raise ExportError(f"kept units must be integer indices; got dtype {arr.dtype}")
  if arr.size and (arr.min() < 0 or arr.max() >= d_ff):
    raise ExportError(f"kept unit index out of range [0, {d_ff}): min {arr.min()}, max {arr.max()}")
  for i, r in enumerate(arr):
    if len(np.unique(r)) != len(r):
      raise ExportError(f"layer {i}: kept units contain duplicates")
  if sizes[0] == 0:
    raise ExportError("kept units: every layer keeps 0 units")
  return np.sort(arr, axis=-1).astype(np.int32)


MASK_SOURCES = ("predictor", "griffin")


def griffin_select(src: ExportSource, prompts: Sequence[str]) -> np.ndarray:
  """GRIFFIN's kept units [B, L, k] per prompt, prefilled as one user turn (as PrunedRunner's
  'griffin' mode does with chat=True)."""
  from ifp_jax.infer import griffin

  rows = [
    src.tokenizer.encode(
      src.tokenizer.apply_chat_template(
        [{"role": "user", "content": p}], add_generation_prompt=True
      )
    )
    for p in prompts
  ]
  return griffin.griffin_units(
    src.ifp.llm, src.params["llm"], rows, src.ifp.k, pad_id=src.tokenizer.pad_id
  )


def select_units(
  src: ExportSource,
  instructions: Sequence[str],
  fold_soft_mask: bool = False,
  mask_source: str = "predictor",
) -> tuple[np.ndarray, np.ndarray | None]:
  """Kept units [B, L, k] per instruction (+ soft mask values [B, L, k]): the JAX predictor's,
  or GRIFFIN's (training-free, the full LLM prefills the instruction as the prompt)."""
  ifp = src.ifp
  if mask_source not in MASK_SOURCES:
    raise ExportError(f"mask_source={mask_source!r}; expected one of {MASK_SOURCES}")
  if not ifp.has_masks:
    raise ExportError("this run is dense (mask_kind='none'): nothing to prune; use --what=full")
  if mask_source == "griffin":
    if fold_soft_mask:
      raise ExportError("--fold_soft_mask needs predictor scores; GRIFFIN's masks are binary")
    return griffin_select(src, instructions), None
  if fold_soft_mask and ifp.hard_concrete:
    raise ExportError(
      f"--fold_soft_mask needs mask_kind='soft_topk' (SoftTopK values); this run "
      f"has {ifp.mask_kind!r}, whose eval masks are binary"
    )
  masks, scores = predict_masks(
    ifp, src.params, src.predictor_tokenizer, list(instructions), src.max_prompt_len
  )
  units = np.asarray(kept_indices(masks, ifp.k))
  scale = None
  if fold_soft_mask:
    lam = np.asarray(masking.soft_topk(jnp.asarray(scores), ifp.k, ifp.eps))
    scale = np.take_along_axis(lam, units, axis=-1)
  return units, scale


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def export_pruned(
  src: ExportSource,
  out,
  *,
  instruction: str | None = None,
  tasks: Sequence[str] = (),
  units: Any = None,
  fold_soft_mask: bool = False,
  mask_source: str = "predictor",
  dtype: str = "float32",
  overwrite: bool = False,
  max_shard_bytes: int = DEFAULT_SHARD_BYTES,
  tokenizer_spec: str | None = None,
  on_tensor: Callable[[str], None] | None = None,
) -> pathlib.Path:
  """Dense width-k Llama(s): for one instruction, one task (OUT), several tasks (OUT/<task>/
  each) or explicit kept `units` [L, k]. The kept units (of the JAX predictor, or of GRIFFIN
  with mask_source='griffin') are recorded in each directory's export_info.json."""
  given = [instruction is not None, bool(tasks), units is not None]
  if sum(given) != 1:
    raise ExportError("a pruned export needs exactly one of --instruction, --task or --units")
  out = check_out(out, overwrite)
  cfg_full = src.ifp.llm
  if units is not None:
    jobs = [
      (
        None,
        {"units_from": "given"},
        check_units(units, cfg_full.num_hidden_layers, cfg_full.intermediate_size),
        None,
      )
    ]
    if fold_soft_mask:
      raise ExportError("--fold_soft_mask needs predicted masks, not explicit --units")
  else:
    texts = [instruction] if instruction is not None else [task_instruction(t) for t in tasks]
    all_units, all_scale = select_units(src, texts, fold_soft_mask, mask_source)
    names = [None] if instruction is not None or len(tasks) == 1 else [_slug(t) for t in tasks]
    if len(set(names)) != len(names):
      raise ExportError(f"task names {list(tasks)} map to clashing directory names {names}")
    jobs = []
    for i, text in enumerate(texts):
      info = {"instruction": text, "mask_source": mask_source}
      if tasks:
        info["task"] = tasks[i]
      jobs.append((names[i], info, all_units[i], None if all_scale is None else all_scale[i]))
  with atomic_dir(out, overwrite) as tmp:
    for name, info, kept, scale in jobs:
      target = tmp / name if name else tmp
      if is_writer():
        target.mkdir(exist_ok=True)
      cfg = gathered_config(cfg_full, kept.shape[-1])
      params = _jit_gather()(
        src.params["llm"], jnp.asarray(kept), None if scale is None else jnp.asarray(scale)
      )
      write_model_dir(
        target,
        src,
        cfg,
        params,
        dtype=dtype,
        max_shard_bytes=max_shard_bytes,
        tokenizer_spec=tokenizer_spec,
        probe_texts=[info.get("instruction", "")],
        on_tensor=on_tensor,
        info=dict(
          info,
          what="pruned",
          mask_kind=src.ifp.mask_kind,
          k=int(kept.shape[-1]),
          fold_soft_mask=fold_soft_mask,
          kept_units=np.asarray(kept).tolist(),
        ),
      )
      del params
  return out


# --- predictor ---------------------------------------------------------------------------------

TEMPLATE = pathlib.Path(__file__).resolve().parents[1] / "torch_predictor.py"


def export_predictor(
  src: ExportSource,
  out,
  *,
  dtype: str = "float32",
  overwrite: bool = False,
  max_shard_bytes: int = DEFAULT_SHARD_BYTES,
  tokenizer_spec: str | None = None,
) -> pathlib.Path:
  """backbone/ (HF Llama), head.safetensors, predictor_config.json, ifp_predictor.py, tokenizer."""
  ifp = src.ifp
  if not ifp.uses_predictor:
    raise ExportError(
      f"mask_kind={ifp.mask_kind!r} has no predictor (its mask does not depend on "
      "the input); export the pruned model with --what=pruned instead"
    )
  out = check_out(out, overwrite)
  pred = src.params["predictor"]
  # The backbone never computes logits (no lm_head): tie so HF reads it as a complete Llama.
  backbone_cfg = ifp.predictor.replace(tie_word_embeddings=True)
  with atomic_dir(out, overwrite) as tmp:
    # The predictor's own tokenizer (the LLM's when shared): what ifp_predictor.py reads with.
    spec = tokenizer_spec or src.predictor_tokenizer_spec
    if is_writer():
      hf_tokenizer.write_tokenizer_files(spec, tmp, backbone_cfg.max_position_embeddings)
      hf_tokenizer.verify_tokenizer(tmp, src.predictor_tokenizer, backbone_cfg.vocab_size)
      (tmp / "backbone").mkdir()
    files = write_llama_weights(
      backbone_cfg,
      pred["backbone"],
      tmp / "backbone",
      dtype=dtype,
      max_shard_bytes=max_shard_bytes,
      desc="predictor backbone",
    )
    write_llama_config(backbone_cfg, tmp / "backbone", dtype)
    head = {}
    for layer in ("head_in", "head_out"):  # Flax kernel [in, out] -> torch Linear [out, in]
      head[f"{layer}.weight"] = np.ascontiguousarray(host_array(pred[layer]["kernel"]).T)
      head[f"{layer}.bias"] = host_array(pred[layer]["bias"])
    if "head_center" in pred:  # (h - c) W + b = h W + (b - c W): a plain Linear reads it
      center = host_array(pred["head_center"]).astype(np.float64)
      kernel = host_array(pred["head_out"]["kernel"]).astype(np.float64)
      head["head_out.bias"] = (head["head_out.bias"] - center @ kernel).astype(np.float32)
    if is_writer():
      save_safetensors(tmp / "head.safetensors", head, dtype)
      shutil.copyfile(TEMPLATE, tmp / PREDICTOR_FILE)
    write_json(
      tmp / "predictor_config.json",
      {
        "format": "ifp_jax.predictor/1",
        "backbone_dir": "backbone",
        "num_layers": ifp.llm.num_hidden_layers,
        "d_ff": ifp.llm.intermediate_size,
        "k": ifp.k,
        "mask_kind": ifp.mask_kind,
        "eps": ifp.eps,
        "score_offset": ifp.hc_init_log_alpha if ifp.hard_concrete else 0.0,
        "head_hidden": ifp.head.hidden,
        "head_activation": ifp.head.activation,
        "max_prompt_len": src.max_prompt_len,
        "pad_token_id": src.predictor_tokenizer.pad_id,
      },
    )
    write_json(
      tmp / COMPLETE_MARKER,
      {
        "what": "predictor",
        "format": f"ifp_jax.export/{FORMAT_VERSION}",
        "dtype": dtype,
        "tokenizer": spec,
        "source": src.provenance,
        "backbone_files": files,
        "usage": f"from {PREDICTOR_FILE[:-3]} import IFPPredictor; "
        "IFPPredictor.from_pretrained(DIR).kept_units(instruction)",
      },
    )
  return out
