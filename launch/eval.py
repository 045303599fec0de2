"""Evaluate a training run with pruned inference: variants x benchmarks, plus mask analysis.

  python -m launch.eval --workdir=runs/tiny
  python -m launch.eval --workdir=runs/ifp --benchmarks=skills,mmlu --limit=mmlu:50,skills:20 \\
      --variants=full,per_input,per_task,baseline:dense_k=runs/dense_k,baseline:static=runs/st

Writes WORKDIR/eval/results.json (every variant x benchmark: score, sample count, per-group
scores), results.md, scores.png / groups_*.png, samples/VARIANT/*.jsonl (per-sample predictions)
and the mask analysis (masks_analysis.json, mask_overlap.png, mask_layers.png).

Benchmarks: perplexity (held-out CPT text, masked model), skills (built-in suite, exact match
per skill and domain), math (reasoning-gym held-out seeds, its scorer), humaneval (pass@1,
sandboxed execution), mmlu (log-likelihood of the answer letter, 0- and 5-shot, per subject
group). See ifp_jax/evals/ for what each measures exactly.

--limit: '' = small defaults (the tiny run's whole eval takes a few minutes on 2 CPU cores), N
for every benchmark, or BENCHMARK:N items (units: perplexity rows, skills examples per skill,
math items per task, humaneval problems, mmlu questions per subject group); 0 = everything.
--instructions: a JSON file {task: instruction} overriding the per-task instructions (task
names: skills, skill domains, 'humaneval', 'gsm', 'math', 'mmlu', 'cpt', 'rg:<gym task>').
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run to evaluate.", required=True)
flags.DEFINE_string(
  "benchmarks", "perplexity,skills,math,humaneval,mmlu", "Comma-separated benchmarks."
)
flags.DEFINE_string("limit", "", "Samples per benchmark: N, or BENCHMARK:N,... (0 = all).")
flags.DEFINE_string(
  "variants",
  "",
  "Comma-separated: full, per_input, per_task, griffin (training-free), "
  "baseline:NAME=WORKDIR. Default: full,per_input,per_task.",
)
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: latest).")
flags.DEFINE_string("instructions", None, "JSON file {task name: instruction} for per-task masks.")
flags.DEFINE_integer("batch_size", 32, "Prompts per generation / scoring batch.")
flags.DEFINE_integer("max_new_tokens", None, "Override every benchmark's generation length.")
flags.DEFINE_string(
  "data_dir", None, "TFDS data dir for the held-out CPT text (default: the run's)."
)
flags.DEFINE_bool("mask_analysis", True, "Write the mask overlap / entropy analysis.")
flags.DEFINE_string("out_dir", None, "Output folder (default WORKDIR/eval).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # JAX's backend probing logs at INFO
  from ifp_jax.evals import suite

  try:
    record = suite.evaluate(
      FLAGS.workdir,
      benchmarks=FLAGS.benchmarks,
      limit=FLAGS.limit,
      variants=FLAGS.variants,
      step=FLAGS.step,
      instructions=FLAGS.instructions,
      batch_size=FLAGS.batch_size,
      max_new_tokens=FLAGS.max_new_tokens,
      data_dir=FLAGS.data_dir,
      analysis=FLAGS.mask_analysis,
      out_dir=FLAGS.out_dir,
    )
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"launch.eval: error: {e}")
  print(open(record["files"]["markdown"]).read())
  print(f"[eval] {record['seconds']:.0f} s; results in {record['files']['json']}", file=sys.stderr)


if __name__ == "__main__":
  from ifp_jax.train import allocator

  allocator.reexec_with_mimalloc()  # before JAX starts: see allocator.py
  app.run(main)
