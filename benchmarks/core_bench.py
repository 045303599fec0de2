"""Cost of the IFP machinery next to the model it prunes (SmolLM2-135M shape, random init).

  python benchmarks/core_bench.py [--quick] [--reps=5]

Every row is jitted, warmed up (compile excluded, reported separately) and timed as the median
of --reps runs with block_until_ready, all in one process so the ratios compare like with like:
  (a) SoftTopK forward+backward on scores [64, 30, 1536], k=512, next to one decoder train step
      (value_and_grad of next-token cross-entropy + SGD update) on 1 x 256 tokens;
  (b) the per-prompt pruning cost -- predictor (4-layer backbone + head 576->128->30*1536) on a
      64-token prompt, top-k, gather to k=512 -- next to a 512-token prefill of the full model;
  (c) (not with --quick) greedy decode of 32 tokens: full model vs the gathered k=512 model.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import bench_json  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from ifp_jax.infer.generate import generate  # noqa: E402
from ifp_jax.model import gather, masking  # noqa: E402
from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig  # noqa: E402
from ifp_jax.model.decoder import Decoder, KVCache  # noqa: E402
from ifp_jax.model.predictor import SparsityPredictor  # noqa: E402

SMOLLM2 = LlamaConfig(
  vocab_size=49152,
  hidden_size=576,
  intermediate_size=1536,
  num_hidden_layers=30,
  num_attention_heads=9,
  num_key_value_heads=3,
  rope_theta=1e5,
  max_position_embeddings=8192,
  tie_word_embeddings=True,
)
K, EPS = 512, 0.1


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, float]:
  """-> (first call incl. compile, median of reps) in ms."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = (time.perf_counter() - t0) * 1e3
  for _ in range(warmup - 1):
    jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append((time.perf_counter() - t0) * 1e3)
  return first, statistics.median(times)


def soft_topk_case(batch: int):
  scores = jax.random.normal(
    jax.random.key(1), (batch, SMOLLM2.num_hidden_layers, SMOLLM2.intermediate_size)
  )
  weights = jax.random.normal(jax.random.key(2), scores.shape)
  grad = jax.jit(jax.grad(lambda s: jnp.sum(masking.soft_topk_mask(s, K, EPS) * weights)))
  return lambda: grad(scores)


def train_step_case(params, tokens: int):
  ids = jax.random.randint(jax.random.key(3), (1, tokens + 1), 0, SMOLLM2.vocab_size)
  model = Decoder(SMOLLM2)

  def loss_fn(p):
    logits = model.apply({"params": p}, ids[:, :-1]).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

  @jax.jit
  def step(p):
    loss, g = jax.value_and_grad(loss_fn)(p)
    return loss, jax.tree.map(lambda w, gw: w - 1e-3 * gw, p, g)

  return lambda: step(params)


def predictor_case(llm_params, prompt_len: int):
  backbone = SMOLLM2.replace(num_hidden_layers=4)
  pred = SparsityPredictor(
    backbone, PredictorHeadConfig(hidden=128), SMOLLM2.num_hidden_layers, SMOLLM2.intermediate_size
  )
  ids = jax.random.randint(jax.random.key(4), (1, prompt_len), 0, SMOLLM2.vocab_size)
  lengths = jnp.array([prompt_len])
  pparams = nn.unbox(jax.jit(pred.init)(jax.random.key(5), ids, lengths))

  @jax.jit
  def select(p):
    return masking.topk_indices(pred.apply(p, ids, lengths)[0], K)  # [L, k]

  @jax.jit
  def gather_jit(full, idx):  # gather.gather_ffn minus its host-side range check
    mlp = full["layers"]["mlp"]
    cols = lambda w: jnp.take_along_axis(w, idx[:, None, :], axis=2)  # noqa: E731
    down = jnp.take_along_axis(mlp["down_proj"]["kernel"], idx[:, :, None], axis=1)
    return cols(mlp["gate_proj"]["kernel"]), cols(mlp["up_proj"]["kernel"]), down

  idx = select(pparams)
  return (
    lambda: select(pparams),
    lambda: gather.gather_ffn(llm_params, idx),
    lambda: gather_jit(llm_params, select(pparams)),
  )


def prefill_case(params, tokens: int):
  ids = jax.random.randint(jax.random.key(6), (1, tokens), 0, SMOLLM2.vocab_size)

  @jax.jit
  def prefill(p):
    cache = KVCache.init(SMOLLM2, 1, tokens + 64)
    out = Decoder(SMOLLM2).apply(  # as generate's prefill: an empty cache
      {"params": p}, ids, cache=cache, empty_cache=True, compute_logits=False
    )
    return out.hidden[:, -1] @ p["embed_tokens"]["embedding"].T, out.cache

  return lambda: prefill(params)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="fewer reps, smaller shapes, no (c)")
  ap.add_argument("--reps", type=int, default=None)
  ap.add_argument("--json", default=None, help="also write the figures as JSON (benchmarks/README)")
  args = ap.parse_args()
  reps = args.reps or (3 if args.quick else 5)
  train_tokens, prefill_tokens = (128, 256) if args.quick else (256, 512)
  jax.config.update("jax_default_matmul_precision", "default")
  start = time.perf_counter()
  print(
    f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}; "
    f"SmolLM2-135M shape (30 x 576, d_ff 1536, 9/3 heads, vocab 49152), f32, "
    f"k={K}, eps={EPS}; median of {reps}",
    flush=True,
  )

  params = nn.unbox(
    jax.jit(Decoder(SMOLLM2).init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  )
  rows: list[tuple[str, float, float]] = []

  def add(name, fn, warmup=1):
    first, med = timed(fn, reps, warmup)
    rows.append((name, first, med))
    print(f"  {name:<58s} {med:10.1f} ms  (first call {first:8.0f} ms)", flush=True)
    return med

  print("(a) training-time cost of SoftTopK")
  st = add("soft_topk_mask fwd+bwd [64, 30, 1536], k=512", soft_topk_case(64))
  tr = add(
    f"decoder train step (value_and_grad + SGD), 1 x {train_tokens} tokens",
    train_step_case(params, train_tokens),
  )
  print(f"  -> soft_topk / train step = {st / tr:.3f}\n")

  print("(b) inference-time cost of choosing and gathering the sub-network")
  sel, gat_eager, both = predictor_case(params, 64)
  p = add("predictor (4 layers + head) + top-k on a 64-token prompt", sel)
  ge = add("gather.gather_ffn to k=512 (eager, as the API runs)", gat_eager)
  pg = add("predictor + top-k + gather, one jitted chain", both)
  pf = add(
    f"prefill of the full model, 1 x {prefill_tokens} tokens", prefill_case(params, prefill_tokens)
  )
  print(
    f"  -> (predictor + gather_ffn) / prefill = {(p + ge) / pf:.3f}; "
    f"(jitted chain) / prefill = {pg / pf:.3f}\n"
  )

  if not args.quick:
    print("(c) greedy decode of 32 tokens after a 64-token prompt (batch 1)")
    prompt = jax.random.randint(jax.random.key(7), (1, 64), 0, SMOLLM2.vocab_size)
    idx = masking.topk_indices(jax.random.normal(jax.random.key(8), (30, 1536)), K)
    small = gather.gather_ffn(params, idx)
    small_cfg = gather.gathered_config(SMOLLM2, K)
    full = add(
      "full model (d_ff 1536)", lambda: generate(SMOLLM2, params, prompt, max_new_tokens=32).tokens
    )
    pruned = add(
      "gathered model (k = 512)",
      lambda: generate(small_cfg, small, prompt, max_new_tokens=32).tokens,
    )
    print(f"  -> gathered / full = {pruned / full:.3f}\n")
  print(f"total {time.perf_counter() - start:.0f} s")
  ms = {bench_json.key(name): med for name, _, med in rows}
  figures = {
    "reps": reps,
    "ms": ms,
    "first_call_ms": {bench_json.key(name): first for name, first, _ in rows},
    "ratios": {
      "soft_topk_over_train_step": st / tr,
      "predictor_gather_over_prefill": (p + ge) / pf,
      "jitted_chain_over_prefill": pg / pf,
    },
  }
  if not args.quick:
    figures["ratios"]["gathered_over_full_decode_time"] = pruned / full
  bench_json.write(
    args.json, "core_bench", f"jax {jax.__version__} on {jax.devices()[0].platform}", **figures
  )


if __name__ == "__main__":
  main()
