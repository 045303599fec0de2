"""Pruned inference speed at the SmolLM2-135M shape: time-to-first-token and decode tokens/s.

  python benchmarks/inference_bench.py [--prompt_len=512 --new_tokens=64 --rounds=5]
      [--batch=8] [--random_weights] [--quick] [--out=benchmarks/results/NAME.md]

Variants (batch 1, or --batch prompts of equal length; greedy, one process, measured
alternately: every round runs each variant once, in reversed order every other round; ratios
are medians of per-round ratios):
  full      the LLM with all d_ff = 1536 FFN units (ifp_jax.infer.generate, no masks);
  pruned    per-input IFP: predictor (the LLM's first 4 layers + a 576 -> 128 -> 30 x 1536 head,
            as configs/smollm2_135m.py builds it) reads the prompt's first `max_prompt_len`
            tokens -> top-k unit indices -> gather.gather_ffn to width k = 512 -> generate with
            the gathered LlamaConfig(intermediate_size=k);
  dense_k   a dense LlamaConfig(intermediate_size=k) with its own random FFN weights;
  masked    (informational) the full model with the same hard masks (ffn_masks=), no gather;
  hf_full   the PyTorch peer (--transformers): transformers' LlamaForCausalLM (sdpa, f32) with
            the same weights, `generate` greedy with a KV cache, in the same rounds;
  hf_pruned the same with the gathered width-k weights (the pruned export's model: the
            predictor is not part of it, so its TTFT is compared with the pruned model's alone).
TTFT = prefill + first token (generate with max_new_tokens=1), plus predictor + gather for
pruned. Decode tokens/s = (new_tokens - 1) / (t(generate new_tokens) - t(generate 1)); both
calls use the same cache length, so the prefill cancels. The predictor + gather chain is timed
two ways: on device (predictor + top-k indices in one jit, then gather.gather_ffn, which runs
its three takes as separate async ops: 2x faster on CPU than the same gather inside one jit,
see benchmarks/README.md) and through the public API (instruct_masks.predict_masks ->
gather.kept_indices -> instruct_masks.pruned_model, with host round trips).
Compile time (first calls) is reported separately from steady state.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_json  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ifp_jax.data.tokenization import load_tokenizer  # noqa: E402
from ifp_jax.infer import instruction_masks as instruct_masks  # noqa: E402
from ifp_jax.infer.generate import generate, load_model  # noqa: E402
from ifp_jax.model import gather, masking  # noqa: E402
from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig  # noqa: E402
from ifp_jax.model.decoder import Decoder  # noqa: E402
from ifp_jax.model.ifp_model import IFPConfig  # noqa: E402
from ifp_jax.model.predictor import SparsityPredictor, backbone_from_llm  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("prompt_len", 512, "Prompt tokens (prefill length).")
flags.DEFINE_integer("new_tokens", 64, "Generated tokens for the decode rate.")
flags.DEFINE_integer(
  "batch",
  1,
  "Prompts per call (distinct windows of the same text, equal length). The pruned model is "
  "selected from the first prompt and serves the whole batch (one task's gathered model); "
  "decode tokens/s counts every row's tokens.",
)
flags.DEFINE_integer("rounds", None, "Alternating rounds (default 5; 2 with --quick).")
flags.DEFINE_bool(
  "random_weights",
  False,
  "Random LLM weights instead of SmolLM2's GGUF (the speed does not depend on the values).",
)
flags.DEFINE_bool("masked", True, "Also time the full model with hard masks (no gather).")
flags.DEFINE_bool(
  "transformers",
  True,
  "Also time transformers' LlamaForCausalLM with the same weights (full and pruned width k).",
)
flags.DEFINE_bool(
  "quick", False, "Smoke run: 128-token prompt, 8 new tokens, 2 rounds, random weights, 8 layers."
)
flags.DEFINE_string("out", None, "Also write the tables (with command, machine, date) here.")
flags.DEFINE_string("json", None, "Also write the figures as JSON (keys: benchmarks/README.md).")


def smollm2_recipe():
  """configs/smollm2_135m.py: k, predictor layers, head, max_prompt_len."""
  spec = importlib.util.spec_from_file_location(
    "bench_smollm2", ROOT / "configs" / "smollm2_135m.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


SMOLLM2 = LlamaConfig(
  vocab_size=49152,
  hidden_size=576,
  intermediate_size=1536,
  num_hidden_layers=30,
  num_attention_heads=9,
  num_key_value_heads=3,
  rms_norm_eps=1e-5,
  rope_theta=1e5,
  max_position_embeddings=8192,
  tie_word_embeddings=True,
)


def random_decoder(cfg: LlamaConfig, seed: int) -> dict:
  init = jax.jit(Decoder(cfg).init)
  return nn.unbox(init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])


def build(quick: bool):
  """(IFPConfig, IFP params {'llm', 'predictor'}, tokenizer, weights label)."""
  c = smollm2_recipe()
  if FLAGS.random_weights or quick:
    cfg = SMOLLM2.replace(num_hidden_layers=8) if quick else SMOLLM2
    llm, label = random_decoder(cfg, 0), "random"
  else:
    cfg, llm, _ = load_model("smollm2")
    label = "SmolLM2-135M-Instruct (GGUF)"
  n_pred = int(c.model.predictor_init_layers)
  ifp = IFPConfig(
    llm=cfg,
    predictor=cfg.replace(num_hidden_layers=n_pred),
    head=PredictorHeadConfig(
      hidden=c.model.head_hidden,
      activation=c.model.head_activation,
      out_init_std=c.model.head_out_init_std,
    ),
    mask_kind="soft_topk",
    k=int(c.model.k),
    eps=float(c.model.eps),
  )
  pred = SparsityPredictor(ifp.predictor, ifp.head, cfg.num_hidden_layers, cfg.intermediate_size)
  ids = jnp.zeros((1, 8), jnp.int32)
  pparams = nn.unbox(jax.jit(pred.init)(jax.random.key(1), ids, jnp.ones((1,), jnp.int32)))
  pparams = dict(pparams["params"], backbone=backbone_from_llm(llm, n_pred))
  tok = load_tokenizer(c.data.tokenizer)
  return ifp, {"llm": llm, "predictor": pparams}, tok, label, int(c.data.max_prompt_len)


def prompt_ids(tok, n: int, batch: int = 1) -> np.ndarray:
  """[batch, n] real tokens: consecutive windows of stdlib source text through the model's
  tokenizer (repeated if short)."""
  text = pathlib.Path(os.__file__).read_text()
  ids = tok.encode(text)
  while len(ids) < n * batch:
    ids = ids + ids
  return np.asarray(ids[: n * batch], np.int32).reshape(batch, n)


def machine() -> str:
  cpu = (
    next(
      (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
      "?",
    )
    if os.path.exists("/proc/cpuinfo")
    else "?"
  )
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  dev = jax.devices()[0]
  return (
    f"{os.cpu_count()} CPUs ({cpu}), load avg {load}; jax {jax.__version__} on "
    f"{dev.platform} ({dev.device_kind})"
  )


def timed(fn: Callable[[], Any]) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  quick = FLAGS.quick
  prompt_len = 128 if quick else FLAGS.prompt_len
  new = 8 if quick else FLAGS.new_tokens
  rounds = FLAGS.rounds or (2 if quick else 5)
  batch = FLAGS.batch
  if new < 2:
    raise app.UsageError(f"--new_tokens={new}: need >= 2 to measure decoding")
  if batch < 1:
    raise app.UsageError(f"--batch={batch}: need >= 1")
  start = time.perf_counter()
  header = machine()
  print(header, flush=True)
  t0 = time.perf_counter()
  ifp, params, tok, label, max_prompt = build(quick)
  k, cfg = ifp.k, ifp.llm
  load_s = time.perf_counter() - t0
  print(
    f"weights: {label} ({load_s:.1f} s); {cfg.num_hidden_layers} layers x "
    f"{cfg.hidden_size}, d_ff {cfg.intermediate_size} -> k {k}; predictor "
    f"{ifp.predictor.num_hidden_layers} layers reads {max_prompt} tokens; prompt "
    f"{prompt_len}, {new} new tokens, batch {batch}, f32",
    flush=True,
  )

  ids = jnp.asarray(prompt_ids(tok, prompt_len, batch))
  text = tok.decode(np.asarray(ids[0]).tolist())
  pred_ids = ids[:1, :max_prompt]  # the first prompt selects the units the batch shares
  pred_len = jnp.array([pred_ids.shape[1]], jnp.int32)
  cfg_k = gather.gathered_config(cfg, k)
  dense_k = random_decoder(cfg_k, 2)

  predictor = SparsityPredictor(
    ifp.predictor, ifp.head, cfg.num_hidden_layers, cfg.intermediate_size
  )

  @jax.jit
  def select(p, pid, plen):  # predictor -> kept-unit indices [L, k], on device
    return masking.topk_indices(predictor.apply({"params": p}, pid, plen)[0], k)

  def api_chain():  # what launch code runs: host round-trips, eager gather
    masks, _ = instruct_masks.predict_masks(ifp, params, tok, [text], max_prompt)
    idx = gather.kept_indices(masks[0], k)
    return instruct_masks.pruned_model(ifp, params, np.asarray(idx))[1]

  def gen(c, p, n, masks=None):
    return lambda: generate(c, p, ids, max_new_tokens=n, ffn_masks=masks).tokens

  def select_only():
    return select(params["predictor"], pred_ids, pred_len)

  def select_and_gather():
    idx = select_only()
    return idx, gather.gather_ffn(params["llm"], idx)

  t0 = time.perf_counter()
  idx, pruned = jax.block_until_ready(select_and_gather())
  chain_compile = time.perf_counter() - t0
  hard = (
    jnp.zeros((cfg.num_hidden_layers, cfg.intermediate_size))
    .at[jnp.arange(cfg.num_hidden_layers)[:, None], idx]
    .set(1.0)
  )
  cases: dict[str, Callable] = {
    "predictor+top-k": select_only,
    "predictor+top-k+gather": select_and_gather,
    "API predict_masks+gather": api_chain,
  }
  models = {
    "full": (cfg, params["llm"], None),
    "pruned": (cfg_k, pruned, None),
    "dense_k": (cfg_k, dense_k, None),
  }
  if FLAGS.masked:
    models["masked"] = (cfg, params["llm"], hard)
  for name, (c, p, m) in models.items():
    cases[f"{name} ttft"] = gen(c, p, 1, m)
    cases[f"{name} gen{new}"] = gen(c, p, new, m)
  peers = {}
  if FLAGS.transformers:
    import hf_peer  # sets libgomp's wait policy before torch loads
    import torch

    peers = {
      "hf_full": hf_peer.causal_lm(cfg, jax.device_get(params["llm"])),
      "hf_pruned": hf_peer.causal_lm(cfg_k, jax.device_get(pruned), "pruned"),
    }
    ids_t = torch.from_numpy(np.asarray(ids)).long()

    def hf_gen(model, n):
      def run():  # exactly n new tokens, greedy, transformers' default (dynamic) KV cache
        with torch.inference_mode():
          return model.generate(
            ids_t,
            attention_mask=torch.ones_like(ids_t),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
          ).numpy()

      return run

    for name, model in peers.items():
      cases[f"{name} ttft"] = hf_gen(model, 1)
      cases[f"{name} gen{new}"] = hf_gen(model, new)

  compile_s, first = {}, {}
  for name, fn in cases.items():  # first calls: compile (+ one run)
    t0 = time.perf_counter()
    first[name] = jax.block_until_ready(fn())
    compile_s[name] = time.perf_counter() - t0
    print(f"  first call {name:<28s} {compile_s[name]:6.2f} s", flush=True)

  # Both sides must do the same work: the same greedy tokens from the same weights.
  same_tokens = {}
  for ours, theirs in (("full", "hf_full"), ("pruned", "hf_pruned")) if peers else ():
    mine = np.asarray(first[f"{ours} gen{new}"])
    same_tokens[ours] = bool(np.array_equal(mine, first[f"{theirs} gen{new}"][:, prompt_len:]))
  if same_tokens:
    print(f"  same greedy tokens as transformers: {same_tokens}", flush=True)

  times: dict[str, list[float]] = {n: [] for n in cases}
  names = list(cases)
  for r in range(rounds):
    for name in names if r % 2 == 0 else names[::-1]:
      times[name].append(timed(cases[name]))
    print(
      f"  round {r + 1}/{rounds}: "
      + ", ".join(f"{n} {times[n][-1] * 1e3:.0f}" for n in names)
      + " (ms)",
      flush=True,
    )

  def per_round(fn):
    return [fn({n: times[n][r] for n in names}) for r in range(rounds)]

  def ttft(t, model):
    return t[f"{model} ttft"] + (t["predictor+top-k+gather"] if model == "pruned" else 0.0)

  def decode_rate(t, model):
    return batch * (new - 1) / max(t[f"{model} gen{new}"] - t[f"{model} ttft"], 1e-9)

  med = statistics.median
  figures: dict[str, Any] = {"variants": {}, "ratios": {}}
  lines = [
    "| variant | TTFT ms | of which predictor+gather ms | decode tokens/s | first calls "
    "s (compile + 1 run) |",
    "|---|---|---|---|---|",
  ]
  for model in [*models, *peers]:
    sel = med(times["predictor+top-k+gather"]) if model == "pruned" else 0.0
    comp = (
      compile_s[f"{model} ttft"]
      + compile_s[f"{model} gen{new}"]
      + (chain_compile if model == "pruned" else 0.0)
    )
    row = {
      "ttft_ms": med(per_round(lambda t: ttft(t, model))) * 1e3,  # noqa: B023 (called at once)
      "predictor_gather_ms": sel * 1e3,
      "decode_tokens_per_s": med(per_round(lambda t: decode_rate(t, model))),  # noqa: B023
      "first_calls_s": comp,
    }
    figures["variants"][model] = row
    lines.append(
      f"| {model} | {row['ttft_ms']:.0f} | {sel * 1e3:.0f} | {row['decode_tokens_per_s']:.1f} | "
      f"{comp:.1f} |"
    )
  api = med(times["API predict_masks+gather"])
  lines += ["", "| ratio (median of per-round ratios) | value | target |", "|---|---|---|"]
  ratios = [
    (
      "pruned / dense_k decode tokens/s",
      per_round(lambda t: decode_rate(t, "pruned") / decode_rate(t, "dense_k")),
      ">= 0.9",
    ),
    (
      "(predictor + top-k + gather) / pruned TTFT",
      per_round(lambda t: t["predictor+top-k+gather"] / ttft(t, "pruned")),
      "<= 0.15",
    ),
    (
      "(predictor + gather, API path) / its TTFT",
      per_round(
        lambda t: t["API predict_masks+gather"] / (t["API predict_masks+gather"] + t["pruned ttft"])
      ),
      "-",
    ),
    ("pruned / full TTFT", per_round(lambda t: ttft(t, "pruned") / ttft(t, "full")), "-"),
    (
      "pruned / full decode tokens/s",
      per_round(lambda t: decode_rate(t, "pruned") / decode_rate(t, "full")),
      "-",
    ),
    ("pruned / dense_k TTFT", per_round(lambda t: ttft(t, "pruned") / ttft(t, "dense_k")), "-"),
  ]
  if "masked" in models:
    ratios.append(
      (
        "masked full / full decode tokens/s",
        per_round(lambda t: decode_rate(t, "masked") / decode_rate(t, "full")),
        "-",
      )
    )
  if peers:  # issue 15's target: 1.3x the PyTorch peer in decode and time-to-first-token
    ratios += [
      (
        "full / transformers full decode tokens/s",
        per_round(lambda t: decode_rate(t, "full") / decode_rate(t, "hf_full")),
        ">= 1.3",
      ),
      (
        "transformers full TTFT / full TTFT",
        per_round(lambda t: t["hf_full ttft"] / t["full ttft"]),
        ">= 1.3",
      ),
      (
        "pruned / transformers pruned decode tokens/s",
        per_round(lambda t: decode_rate(t, "pruned") / decode_rate(t, "hf_pruned")),
        ">= 1.3",
      ),
      (
        "transformers pruned TTFT / pruned model TTFT (no predictor)",
        per_round(lambda t: t["hf_pruned ttft"] / t["pruned ttft"]),
        ">= 1.3",
      ),
    ]
  lines += [f"| {n} | {med(v):.3f} | {tgt} |" for n, v, tgt in ratios]
  figures["ratios"] = {bench_json.key(n): med(v) for n, v, _ in ratios}
  if same_tokens:
    figures["same_tokens_as_transformers"] = same_tokens
    lines += ["", f"Same {new} greedy tokens as transformers: " + ", ".join(
      f"{m} {'yes' if v else 'no'}" for m, v in same_tokens.items()
    ) + (" (random weights can differ at near-ties)." if label == "random" else ".")]  # fmt: skip
  lines.append("")
  lines.append(
    "dense_k and pruned share one LlamaConfig, hence one compiled generate: the "
    "first of them pays the compile."
  )
  lines.append(
    f"predictor + top-k alone: {med(times['predictor+top-k']) * 1e3:.0f} ms; "
    f"predictor + gather through the API path: {api * 1e3:.0f} ms (median); "
    f"weights: {label}; prompt {prompt_len} tokens, predictor input {max_prompt}"
  )
  lines.append(
    "per-round ms: "
    + "; ".join(f"{n} " + " ".join(f"{x * 1e3:.0f}" for x in times[n]) for n in names)
  )
  table = "\n".join(lines)
  print("\n" + table)
  print(f"total {time.perf_counter() - start:.0f} s")
  if FLAGS.out:
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(["python", os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    out.write_text(
      f"# Pruned inference: TTFT and decode\n\n"
      f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
      f"- command: `{cmd}`\n- machine: {header}\n"
      f"- {rounds} alternating rounds; load average at start and end: "
      f"{header.split('load avg ')[1].split(';')[0]} / "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other "
      f"jobs may run; ratios are per round)\n\n{table}\n"
    )
    print(f"wrote {out}")
  bench_json.write(
    FLAGS.json,
    "inference_bench",
    header,
    weights=label,
    prompt_len=prompt_len,
    new_tokens=new,
    batch=batch,
    rounds=rounds,
    predictor_topk_ms=med(times["predictor+top-k"]) * 1e3,
    api_predictor_gather_ms=api * 1e3,
    **figures,
  )


if __name__ == "__main__":
  app.run(main)
