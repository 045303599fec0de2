"""MMLU evaluation speed: one forward pass per question vs one row per (question, letter).

  python benchmarks/eval_bench.py [--per_group=1 --shots=0,5 --rounds=2 --batch=16]
      [--quick] [--out=benchmarks/results/NAME.md] [--json=FILE]

Both paths run `ifp_jax.evals.mmlu.letter_logliks` through a `PrunedRunner` (mode full) on the
same fixed questions (`--per_group` per group, the eval's own fixed shuffle) and prompts:
  one_pass   `PrunedRunner.choice_loglikelihoods`: each context runs once, the vocabulary head
             only at its last token scores " A".." D" (what lm-eval does);
  per_letter the previous path: `PrunedRunner.loglikelihood` on 4 rows per question (the same
             context 4 times), full-vocabulary logits at every position.
Each round runs both (order reversed every other round); the first round includes compiles and
is reported apart. Questions/s = questions / wall time; the ratio is the median of per-round
ratios. The two paths' log-likelihoods are compared (max |difference|) and must predict the
same letters. --quick: a random 2-layer model with SmolLM2's tokenizer, 0-shot, 1 round.
"""

from __future__ import annotations

import os
import pathlib
import statistics
import sys
import time

from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_json  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ifp_jax.data.tokenization import load_tokenizer  # noqa: E402
from ifp_jax.evals import common, mmlu  # noqa: E402
from ifp_jax.infer.generate import load_model  # noqa: E402
from ifp_jax.infer.pruned import PrunedRunner  # noqa: E402
from ifp_jax.infer.run_loader import LoadedRun  # noqa: E402
from ifp_jax.model.config import LlamaConfig  # noqa: E402
from ifp_jax.model.decoder import Decoder  # noqa: E402
from ifp_jax.model.ifp_model import IFPConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("per_group", 1, "Questions per group (7 groups).")
flags.DEFINE_list("shots", ["0", "5"], "Shot counts to time.")
flags.DEFINE_integer("rounds", None, "Rounds (default 2: one with compiles, one steady).")
flags.DEFINE_integer("batch", 16, "Eval batch size (EvalContext.batch_size).")
flags.DEFINE_bool("quick", False, "Smoke run: random 2-layer model, 0-shot, 1 round.")
flags.DEFINE_string("out", None, "Also write the table (with command, machine, date) here.")
flags.DEFINE_string("json", None, "Also write the figures as JSON here (keys: benchmarks/README).")


def build_runner(quick: bool) -> tuple[PrunedRunner, str]:
  if quick:
    tok = load_tokenizer("smollm2")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    cfg = cfg.replace(max_position_embeddings=8192)
    init = jax.jit(Decoder(cfg).init)
    params = nn.unbox(init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    label = "random 2-layer x 64 (SmolLM2 tokenizer)"
  else:
    cfg, params, _ = load_model("smollm2")
    tok = load_tokenizer("smollm2")  # ours (load_model's is the raw HF tokenizer)
    label = "SmolLM2-135M-Instruct (GGUF)"
  meta = {"config": {"data": {"max_prompt_len": 128}}}
  run = LoadedRun(
    pathlib.Path("."), 0, IFPConfig(llm=cfg, mask_kind="none"), {"llm": params}, tok, meta
  )
  return PrunedRunner(run, "full"), label


def machine() -> str:
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  dev = jax.devices()[0]
  return f"{os.cpu_count()} CPUs, load avg {load}; jax {jax.__version__} on {dev.platform}"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  quick = FLAGS.quick
  shots_list = [0] if quick else [int(s) for s in FLAGS.shots]
  rounds = FLAGS.rounds or (1 if quick else 2)
  header = machine()
  print(header, flush=True)
  runner, label = build_runner(quick)
  ctx = common.EvalContext("full", runner, None, {}, batch_size=FLAGS.batch)
  pools, rest = mmlu.split_shots(mmlu.load_questions())
  questions = mmlu.select(rest, FLAGS.per_group)
  budget = runner.cfg_full.max_position_embeddings - 16
  length = lambda t: len(runner.tokenizer.encode(t))  # noqa: E731
  print(f"weights: {label}; {len(questions)} questions, shots {shots_list}", flush=True)

  record = {"weights": label, "questions": len(questions), "shots": {}}
  lines = [
    "| shots | tokens/question | one_pass q/s | per_letter q/s | one_pass / per_letter | "
    "first round (compile) ratio | max abs loglik diff | same letters |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for shots in shots_list:
    prompts, _, _ = mmlu.contexts(questions, pools, shots, length, budget)
    mean_tokens = statistics.mean(map(length, prompts))
    paths = {
      "one_pass": lambda p=prompts: mmlu.letter_logliks(ctx, p, None),
      "per_letter": lambda p=prompts: mmlu.letter_logliks(ctx, p, None, one_pass=False),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    values = {}
    for r in range(rounds):
      for name in list(paths)[:: (-1) ** r]:
        t0 = time.perf_counter()
        values[name] = paths[name]()
        times[name].append(time.perf_counter() - t0)
    diff = float(np.max(np.abs(np.subtract(values["one_pass"], values["per_letter"]))))
    same = mmlu.predictions(values["one_pass"]) == mmlu.predictions(values["per_letter"])
    steady = range(1, rounds) if rounds > 1 else range(rounds)
    ratios = [times["per_letter"][r] / times["one_pass"][r] for r in steady]
    qps = {k: len(questions) / statistics.median(v[i] for i in steady) for k, v in times.items()}
    first = times["per_letter"][0] / times["one_pass"][0]
    rec = {
      "tokens_per_question": mean_tokens,
      "one_pass_questions_per_s": qps["one_pass"],
      "per_letter_questions_per_s": qps["per_letter"],
      "speedup": statistics.median(ratios),
      "speedup_first_round": first,
      "max_abs_loglik_diff": diff,
      "same_predictions": same,
    }
    record["shots"][str(shots)] = rec
    lines.append(
      f"| {shots} | {mean_tokens:.0f} | {qps['one_pass']:.3f} | {qps['per_letter']:.3f} | "
      f"{rec['speedup']:.2f}x | {first:.2f}x | {diff:.2e} | {same} |"
    )
    print(lines[-1], flush=True)
  table = "\n".join(lines)
  print(table)
  if FLAGS.out:
    cmd = " ".join(["python", *sys.argv])
    pathlib.Path(FLAGS.out).write_text(
      f"# MMLU eval speed\n\n- command: `{cmd}`\n- machine: {header}\n- date: "
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n- weights: {label}\n\n{table}\n"
    )
  bench_json.write(FLAGS.json, "eval_bench", header, **record)


if __name__ == "__main__":
  app.run(main)
