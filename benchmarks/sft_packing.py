"""Packed vs unpacked SFT: real (non-pad) tokens per token slot and real tokens/s of the train step.

  python benchmarks/sft_packing.py [--shape=smollm2|tiny] [--batch=N --seq=T] [--pack=4]
      [--rounds=R] [--batches=N] [--dtype=float32|bfloat16] [--quick] [--out=FILE.md]
      [--json=FILE.json]

The SFT stream of configs/smollm2_135m.py (or configs/tiny.py) as the trainer reads it, once with
`data.sft_pack=1` (one conversation per row, the rest padding) and once with `--pack`
conversations per row (ifp_jax/data/packing.py pack_sft). Over the first --batches batches of
each: the real-token fraction. Then our jitted IFP train step (benchmarks/train_throughput.py
JaxVariant: soft_topk masks, AdamW) on one batch of each layout, measured alternately for
--rounds rounds in one process (the order reverses each round); real tokens/s = the batch's
real tokens / step time. Ratios are medians of per-round ratios.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import time

from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_json  # noqa: E402
from train_throughput import JaxVariant, load_config, machine  # noqa: E402

from ifp_jax.data.batch import FIELD_NAMES  # noqa: E402
from ifp_jax.data.pipeline import build_iterator  # noqa: E402
from ifp_jax.data.tokenization import load_tokenizer  # noqa: E402
from ifp_jax.train.trainer import resolve_models  # noqa: E402

FLAGS = flags.FLAGS
# --shape, --batch, --seq, --rounds, --dtype, --quick, --out, --json: train_throughput's flags.
flags.DEFINE_integer("pack", 4, "Conversations per packed row (data.sft_pack).")
flags.DEFINE_integer("batches", 20, "Batches of each layout counted for the real-token fraction.")
flags.DEFINE_string("data_dir", "", "TFDS dir of the built sources ('' = the default).")


def stream(config, tok, pack: int, seq: int, batch: int, n: int) -> tuple[list[dict], float]:
  """The first n SFT batches with data.sft_pack = pack, and their real-token fraction."""
  data = config.data
  data.sft_pack = pack
  it = build_iterator(data, tok, kind="sft", seq_len=seq, batch_size=batch, seed=config.seed)
  batches = [next(it) for _ in range(n)]
  stats = it.stats
  return batches, stats["real_tokens"] / max(stats["token_slots"], 1)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  shape = "tiny" if FLAGS.quick else FLAGS.shape
  config, cfg_path = load_config(shape, FLAGS.dtype)
  if FLAGS.data_dir:
    config.data.data_dir = FLAGS.data_dir
  batch_size = FLAGS.batch or (16 if shape == "tiny" else 2)
  seq = FLAGS.seq or int(config.train.seq_len)
  rounds = FLAGS.rounds or (2 if FLAGS.quick else 3)
  n_batches = 4 if FLAGS.quick else FLAGS.batches
  header = machine()
  print(header, flush=True)
  tok = load_tokenizer(config.data.tokenizer)
  ifp, pretrained = resolve_models(config, tok)

  t0 = time.perf_counter()
  layouts = {"unpacked": 1, "packed": FLAGS.pack}
  data, frac = {}, {}
  for name, pack in layouts.items():
    data[name], frac[name] = stream(config, tok, pack, seq, batch_size, n_batches)
    print(f"  {name} (sft_pack={pack}): real-token fraction {frac[name]:.3f}", flush=True)
  t_data = time.perf_counter() - t0

  runners, real = {}, {}
  for name in layouts:
    batch = {k: data[name][0][k] for k in FIELD_NAMES}
    real[name] = int(sum(int(b["segment_ids"].astype(bool).sum()) for b in data[name][:1]))
    t0 = time.perf_counter()
    runners[name] = JaxVariant(ifp, config, pretrained, batch)
    runners[name].step()  # compile
    print(f"  {name}: init + first step {time.perf_counter() - t0:.1f} s", flush=True)
  times = {n: [] for n in layouts}
  for r in range(rounds):
    for name in list(layouts) if r % 2 == 0 else list(layouts)[::-1]:
      t0 = time.perf_counter()
      runners[name].step()
      times[name].append(time.perf_counter() - t0)
    print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in times))

  step_ratio = statistics.median(p / u for p, u in zip(times["packed"], times["unpacked"]))
  real_tps = {n: real[n] / statistics.median(times[n]) for n in layouts}
  real_ratio = statistics.median(
    (real["packed"] / p) / (real["unpacked"] / u)
    for p, u in zip(times["packed"], times["unpacked"])
  )
  rows = [
    ("real-token fraction (stream)", f"{frac['unpacked']:.3f}", f"{frac['packed']:.3f}",
     f"{frac['packed'] / max(frac['unpacked'], 1e-9):.2f}x"),
    ("real tokens in the timed batch", str(real["unpacked"]), str(real["packed"]),
     f"{real['packed'] / max(real['unpacked'], 1):.2f}x"),
    ("train step (s, median)", f"{statistics.median(times['unpacked']):.3f}",
     f"{statistics.median(times['packed']):.3f}", f"{step_ratio:.2f}x"),
    ("real tokens/s", f"{real_tps['unpacked']:.0f}", f"{real_tps['packed']:.0f}",
     f"{real_ratio:.2f}x"),
  ]  # fmt: skip
  table = [
    f"| {shape} ({cfg_path.name}), {batch_size} x {seq}, {FLAGS.dtype} | unpacked | packed "
    f"(sft_pack={FLAGS.pack}) | packed / unpacked |",
    "|---|---|---|---|",
    *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
  ]
  text = "\n".join(table)
  print(text)
  if FLAGS.out:
    cmd = " ".join(["python", *sys.argv])
    pathlib.Path(FLAGS.out).write_text(
      f"# Packed vs unpacked SFT\n\nCommand: `{cmd}`  \n{header}\n\n{text}\n\n"
      f"Data: {n_batches} batches per layout ({t_data:.0f} s); timing: {rounds} alternating "
      "rounds of one step each, after a compile step.\n"
    )
  if FLAGS.json:
    bench_json.write(
      FLAGS.json,
      "sft_packing",
      header,
      shape=shape,
      batch=batch_size,
      seq=seq,
      pack=FLAGS.pack,
      real_frac_unpacked=frac["unpacked"],
      real_frac_packed=frac["packed"],
      step_s_unpacked=statistics.median(times["unpacked"]),
      step_s_packed=statistics.median(times["packed"]),
      step_packed_over_unpacked=step_ratio,
      real_tokens_per_s_unpacked=real_tps["unpacked"],
      real_tokens_per_s_packed=real_tps["packed"],
      real_tokens_per_s_packed_over_unpacked=real_ratio,
    )


if __name__ == "__main__":
  app.run(main)
