"""Held-out perplexity on the CPT corpus, through the masked model.

The batches are the main run's own held-out CPT sample (files held out by hash, the fixed
`train.heldout.held_out_sample` the trainer evaluates, reduced by the same `held_out_loss`), so
every variant reads the same tokens, with the training layout: a row is cut into `num_chunks`
chunks, chunk 1 has no loss. Masks by mode:
  full       no mask (every FFN unit);
  per_input  the predictor reads chunk j and its mask applies to chunk j+1, as in CPT training
             (the trainer's held-out eval); a static run uses its one mask;
  per_task   one mask from the 'cpt' task instruction for every row;
  griffin    training-free: the full LLM prefills what the predictor would read (chunk j) and
             GRIFFIN's top-k units apply to chunk j+1 (ifp_jax/infer/griffin.py).
Masking with hard top-k masks computes exactly what the gathered width-k model computes.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ifp_jax.evals import common
from ifp_jax.infer import griffin
from ifp_jax.infer import instruction_masks as instruct_masks
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder
from ifp_jax.model.ifp_model import IFPConfig, IFPModel
from ifp_jax.train import heldout
from ifp_jax.train.losses import weighted_cross_entropy

NAME = "perplexity"
DEFAULT_LIMIT = 32  # rows of seq_len tokens


@functools.lru_cache(maxsize=8)
def _nll_fn(cfg: LlamaConfig):

  def fn(llm_params, ids, targets, weights, masks, mask_index):
    logits = (
      Decoder(cfg).apply({"params": llm_params}, ids, ffn_masks=masks, mask_index=mask_index).logits
    )
    ce, tokens = weighted_cross_entropy(logits, targets, weights)
    return ce * tokens, tokens

  return jax.jit(fn)


@functools.lru_cache(maxsize=8)
def _chunk_masks_fn(ifp: IFPConfig):
  def fn(params, predictor_ids, predictor_lengths):
    return (
      IFPModel(ifp)
      .apply(
        {"params": params},
        predictor_ids=predictor_ids,
        predictor_lengths=predictor_lengths,
        batch=predictor_ids.shape[0],
        deterministic=True,
        method=IFPModel.masks,
      )
      .masks
    )

  return jax.jit(fn)


def held_out_batches(ctx: common.EvalContext, rows: int) -> list[dict[str, np.ndarray]]:
  """Up to `rows` rows (batches of ctx.batch_size) of the reference run's CPT eval split."""
  ref = ctx.reference
  cfg = ref.meta["config"]
  data_cfg = ml_collections.ConfigDict(cfg["data"])
  if ctx.data_dir:
    data_cfg.data_dir = ctx.data_dir
  key = (NAME, json.dumps(cfg["data"], sort_keys=True), ctx.data_dir, rows, ctx.batch_size)
  if key not in ctx.cache:
    try:
      batches = heldout.held_out_sample(
        data_cfg,
        ref.tokenizer,
        kind="cpt",
        seq_len=int(cfg["train"]["seq_len"]),
        batch_size=ctx.batch_size,
        rows=rows,
        seed=int(cfg.get("seed", 0)),
        predictor_tokenizer=ref.predictor_tokenizer,
      )
    except ValueError as e:
      raise ValueError(f"{ref.workdir}: no held-out CPT data ({e})") from e
    ctx.cache[key] = batches
  return ctx.cache[key]


def _masks(
  ctx: common.EvalContext, batch: dict[str, np.ndarray]
) -> tuple[np.ndarray | None, np.ndarray | None]:
  """(ffn_masks [B, C, L, F] / [B, L, F] or None, mask_index or None) for this variant."""
  runner, run = ctx.runner, ctx.runner.run
  ifp = run.ifp
  if runner.mode == "full" or not ifp.has_masks:
    return None, None
  b = batch["input_ids"].shape[0]
  if runner.mode == "griffin":  # the LLM prefills each chunk's own tokens: targets (packing.py)
    targets, c = np.asarray(batch["targets"]), batch["predictor_ids"].shape[1]
    p = targets.shape[1] // (c + 1)
    chunks = targets[:, : c * p].reshape(b, c, p)
    rows = [r.tolist() for r in chunks.reshape(-1, p)]
    units = griffin.griffin_units(
      ifp.llm, run.params["llm"], rows, ifp.k, pad_id=runner.tokenizer.pad_id
    )
    masks = griffin.units_to_mask(units, ifp.llm.intermediate_size)
    return masks.reshape(b, c, *masks.shape[1:]), batch["mask_index"]
  if runner.mode == "per_task" or not ifp.uses_predictor:
    text = ctx.instruction("cpt")
    masks, _ = instruct_masks.predict_masks(
      ifp, run.params, run.predictor_tokenizer, [text], instruct_masks.max_prompt_len(run.meta)
    )
    return np.broadcast_to(masks, (b, *masks.shape[1:])), None
  masks = _chunk_masks_fn(ifp)(
    run.params, jnp.asarray(batch["predictor_ids"]), jnp.asarray(batch["predictor_lengths"])
  )
  return masks, batch["mask_index"]


def run(ctx: common.EvalContext, limit: int | None) -> dict[str, Any]:
  batches = held_out_batches(ctx, limit or 10**9)
  run_ = ctx.runner.run
  if run_.tokenizer.vocab_size != ctx.reference.tokenizer.vocab_size or (
    run_.meta.get("tokenizer") != ctx.reference.meta.get("tokenizer")
  ):
    raise ValueError(
      f"{run_.workdir} uses tokenizer {run_.meta.get('tokenizer')!r}, the main "
      f"run {ctx.reference.meta.get('tokenizer')!r}: perplexities would not be "
      f"comparable"
    )
  if ctx.runner.mode == "per_input" and run_.ifp.uses_predictor:
    pred = lambda r: r.meta.get("predictor_tokenizer") or r.meta.get("tokenizer")  # noqa: E731
    if pred(run_) != pred(ctx.reference):  # the batches' predictor ids are the main run's
      raise ValueError(
        f"{run_.workdir}'s predictor reads tokenizer {pred(run_)!r}, the main run's "
        f"{pred(ctx.reference)!r}: evaluate it as its own main run"
      )
  fn = _nll_fn(run_.ifp.llm)
  done = [0]

  def loss_fn(batch):
    masks, mask_index = _masks(ctx, batch)
    s, t = fn(
      run_.params["llm"],
      jnp.asarray(batch["input_ids"]),
      jnp.asarray(batch["targets"]),
      jnp.asarray(batch["loss_weights"]),
      None if masks is None else jnp.asarray(masks),
      None if mask_index is None else jnp.asarray(mask_index),
    )
    done[0] += 1
    ctx.progress(done[0] / len(batches))
    return {"ce": float(s) / max(float(t), 1.0), "tokens": float(t)}

  try:
    out = heldout.held_out_loss(batches, loss_fn)
  except ValueError as e:
    raise ValueError("the held-out CPT batches hold no loss tokens") from e
  mean_nll, tokens, rows = out["loss"], out["tokens"], out["rows"]
  return {
    NAME: common.result(
      "perplexity",
      math.exp(mean_nll),
      rows,
      nll_per_token=mean_nll,
      tokens=int(tokens),
      lower_is_better=True,
    )
  }
