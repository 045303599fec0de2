"""Print a model's continuation of a prompt, computed by our JAX decoder with the KV cache.

  python -m launch.generate --model=smollm2 --prompt="What is JAX?" --chat --max_new_tokens=64
  python -m launch.generate --model=/path/to/hf_dir --prompt="def fib(n):"
  python -m launch.generate --workdir=runs/tiny --prompt="Reverse the word.\nhello"
  python -m launch.generate --workdir=runs/tiny --prompt="hello" \\
    --task_instruction="Reverse the word."
  python -m launch.generate --model=smollm2 --griffin --k=512 --chat --prompt="What is JAX?"
  python -m launch.generate --workdir=runs/tiny --griffin --prompt="Reverse the word.\nhello"

With --workdir (a launch.train run), generation is pruned inference (ifp_jax/infer/pruned.py): the
predictor reads the prompt (or --task_instruction), the kept FFN units are gathered into a dense
width-k model, which decodes with the KV cache. --chat defaults to on there (runs are SFT'd on
ChatML turns).

Greedy by default; --temperature > 0 samples (with --top_k and --seed). The model is resolved
into a `Runner` (config, params, optional FFN masks, tokenizer): a pruned-inference mode that
reads a training checkpoint adds one more resolver and reuses the rest.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "model", "smollm2", "'smollm2', 'gguf:FILE', 'hf:DIR' (or a bare HF directory) or a WORKDIR."
)
flags.DEFINE_string(
  "workdir",
  None,
  "A training run directory: pruned inference with its latest checkpoint (overrides --model).",
)
flags.DEFINE_string(
  "task_instruction",
  None,
  "With --workdir: the predictor reads this task "
  "instruction instead of the prompt (per-task mask).",
)
flags.DEFINE_bool("full", False, "With --workdir: no pruning, every FFN unit (the full LLM).")
flags.DEFINE_bool(
  "griffin",
  False,
  "Training-free pruning (GRIFFIN): the full LLM prefills the prompt (or --task_instruction), "
  "each layer keeps its --k units of largest normalised activation norm, the gathered width-k "
  "model generates. Works with --model (needs --k) and --workdir (default k: the run's).",
)
flags.DEFINE_integer("k", 0, "--griffin: kept FFN units per layer (0 = the run's k).")
flags.DEFINE_string("stop", None, "With --workdir: cut the output at this string.")
flags.DEFINE_string("prompt", None, "Prompt text.", required=True)
flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")
flags.DEFINE_bool(
  "chat",
  False,
  "Wrap the prompt as one user turn (the model's chat template, "
  "else ChatML). Generation stops at end-of-turn/end-of-text tokens.",
)
flags.DEFINE_float("temperature", 0.0, "0 = greedy; > 0 samples.")
flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0 = all).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_bool("show_prompt", False, "Echo the (templated) prompt before the continuation.")


@dataclasses.dataclass
class Runner:
  """Everything generation needs; `ffn_masks` [L, F] or None (a gathered model needs none)."""

  cfg: Any
  params: Any
  tokenizer: Any  # tokenizers.Tokenizer
  chat_template: str | None = None
  ffn_masks: Any = None
  description: str = ""


def runner_from_model(spec: str) -> Runner:
  """A dense model: 'smollm2', 'gguf:FILE' or an HF directory."""
  from ifp_jax.infer.generate import chat_template, load_model

  cfg, params, tokenizer = load_model(spec)
  return Runner(cfg, params, tokenizer, chat_template(spec), description=f"dense {spec}")


def continue_prompt(
  runner: Runner,
  prompt: str,
  *,
  max_new_tokens: int,
  chat: bool,
  temperature: float = 0.0,
  top_k: int = 0,
  seed: int = 0,
) -> tuple[str, str]:
  """-> (the text fed to the model, its continuation with special tokens removed)."""
  import jax

  from ifp_jax.infer.generate import chat_prompt, generate, pad_prompts, stop_ids, trim

  text = chat_prompt(prompt, runner.chat_template) if chat else prompt
  ids = runner.tokenizer.encode(text).ids
  if not ids:
    raise app.UsageError("the prompt encodes to no tokens")
  stops = stop_ids(runner.tokenizer)
  input_ids, attn = pad_prompts([ids])
  out = generate(
    runner.cfg,
    runner.params,
    input_ids,
    attn,
    max_new_tokens=max_new_tokens,
    ffn_masks=runner.ffn_masks,
    eos_ids=stops,
    temperature=temperature,
    top_k=top_k,
    rng=jax.random.key(seed),
  )
  new = trim(out.tokens, out.lengths)[0]
  return text, runner.tokenizer.decode(new, skip_special_tokens=True)


def griffin_runner(runner: Runner, prompt: str, chat: bool, k: int) -> Runner:
  """--model --griffin: the dense model gathered to GRIFFIN's k units for this prompt."""
  from ifp_jax.infer import griffin
  from ifp_jax.infer.generate import chat_prompt
  from ifp_jax.model.gather import gather_ffn, gathered_config

  if k <= 0:
    raise ValueError("--griffin with --model needs --k (kept FFN units per layer)")
  source = FLAGS.task_instruction or prompt  # what GRIFFIN prefills, templated like the prompt
  text = chat_prompt(source, runner.chat_template) if chat else source
  units = griffin.griffin_units(runner.cfg, runner.params, [runner.tokenizer.encode(text).ids], k)
  return dataclasses.replace(
    runner,
    cfg=gathered_config(runner.cfg, k),
    params=gather_ffn(runner.params, units[0]),
    description=f"{runner.description}, GRIFFIN {k}/{runner.cfg.intermediate_size} FFN units",
  )


def pruned_generation(prompt: str, workdir: str) -> tuple[str, str]:
  """--workdir: (the continuation, a description of what ran)."""
  from ifp_jax.infer.pruned import PrunedRunner
  from ifp_jax.infer.run_loader import load_run

  run = load_run(workdir)
  if FLAGS.griffin and FLAGS.full:
    raise ValueError("--griffin and --full exclude each other")
  if FLAGS.griffin and FLAGS.k not in (0, run.ifp.k):
    run.ifp = dataclasses.replace(run.ifp, k=FLAGS.k)
  mode = "full" if FLAGS.full else ("per_task" if FLAGS.task_instruction else "per_input")
  mode = "griffin" if FLAGS.griffin else mode
  runner = PrunedRunner(run, mode)
  chat = FLAGS.chat or not any(a.startswith(("--chat", "--nochat")) for a in sys.argv)
  text = runner.generate(
    [prompt],
    instructions=FLAGS.task_instruction,
    max_new_tokens=FLAGS.max_new_tokens,
    chat=chat,
    stop=[FLAGS.stop] if FLAGS.stop else (),
    temperature=FLAGS.temperature,
    top_k=FLAGS.top_k,
    seed=FLAGS.seed,
  )[0]
  width = run.ifp.llm.intermediate_size
  what = (
    f"{mode}, {runner.cfg_k.intermediate_size}/{width} FFN units per layer, "
    f"step {run.step} of {run.workdir}"
  )
  return text, what


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # JAX's backend probing logs at INFO
  if not (math.isfinite(FLAGS.temperature) and FLAGS.temperature >= 0):
    sys.exit(f"error: --temperature={FLAGS.temperature} must be a finite number >= 0")
  if FLAGS.workdir:
    FLAGS.workdir = os.path.expanduser(FLAGS.workdir)
  start = time.time()
  from ifp_jax.io.models import parse_spec

  try:
    workdir = FLAGS.workdir or (FLAGS.model if parse_spec(FLAGS.model)[0] == "workdir" else None)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  if workdir:
    try:
      text, what = pruned_generation(FLAGS.prompt, workdir)
    except (FileNotFoundError, ValueError) as e:
      sys.exit(f"error: {e}")
    print(text)
    print(f"[{what}, {time.time() - start:.1f}s]", file=sys.stderr, flush=True)
    return
  try:
    runner = runner_from_model(FLAGS.model)
    if FLAGS.griffin:
      runner = griffin_runner(runner, FLAGS.prompt, FLAGS.chat, FLAGS.k)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  text, continuation = continue_prompt(
    runner,
    FLAGS.prompt,
    max_new_tokens=FLAGS.max_new_tokens,
    chat=FLAGS.chat,
    temperature=FLAGS.temperature,
    top_k=FLAGS.top_k,
    seed=FLAGS.seed,
  )
  if FLAGS.show_prompt:
    print(text, end="")
  print(continuation)
  print(f"[{runner.description}, {time.time() - start:.1f}s]", file=sys.stderr, flush=True)


if __name__ == "__main__":
  from ifp_jax.train import allocator

  allocator.reexec_with_mimalloc()  # before JAX starts: see allocator.py
  app.run(main)
