"""A built-in multi-domain suite of tiny instruction-following skills (SFT + eval).

14 skills in 3 domains. Within a domain every skill reads the *same kind of input* (two numbers,
a word, a Python list), so only the instruction says what to do: the setting in which a
prompt-conditioned FFN mask has something to pick up. Each skill has several paraphrased
instructions (>= 3) and a short canonical task instruction (`task_instruction`, used for
per-task masks). Answers are short strings scored by `exact_match`.

Example fields: skill, domain, instruction, input, prompt (= instruction + "\\n" + input), answer.

Train/eval split is structural: an input belongs to eval iff a hash of (skill, input) falls in
the eval bucket (`EVAL_BUCKETS`), so no eval input is ever generated for train, whatever the
seeds. Generation is deterministic in (split, seed, index). Sized so that a ~1-5M parameter byte
model learns much of it within minutes on a CPU: with the byte tokenizer a ChatML-formatted example
is <= 83 tokens (seq_len 128 never truncates) and a prompt <= 61 bytes (max_prompt_len 64).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from typing import Callable, Sequence

EVAL_BUCKETS = 10  # 1 in EVAL_BUCKETS inputs (by hash) is reserved for eval
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclasses.dataclass(frozen=True)
class Skill:
  name: str
  domain: str
  task_instruction: str  # canonical short instruction (per-task masks)
  instructions: tuple[str, ...]  # paraphrases used in prompts
  make_input: Callable[[random.Random], str]
  solve: Callable[[str], str]


def _two_numbers(hi: int, lo: int = 0) -> Callable[[random.Random], str]:
  return lambda r: f"{r.randint(lo, hi)}, {r.randint(lo, hi)}"


def _nums(s: str) -> list[int]:
  return [int(x) for x in re.findall(r"-?\d+", s)]


def _word(r: random.Random) -> str:
  return "".join(r.choice(_LETTERS) for _ in range(r.randint(3, 7)))


def _int_list(r: random.Random) -> str:
  return "xs = [" + ", ".join(str(r.randint(0, 9)) for _ in range(r.randint(2, 5))) + "]"


def _list_and_index(r: random.Random) -> str:
  xs = _int_list(r)
  return f"{xs}; i = {r.randint(0, len(_nums(xs)) - 1)}"


def _expr(r: random.Random) -> str:
  a, b, c = (r.randint(0, 9) for _ in range(3))
  op1, op2 = r.choice("+-*"), r.choice("+-*")
  return f"{a} {op1} {b} {op2} {c}"


def _eval_expr(s: str) -> str:
  if not re.fullmatch(r"[0-9 +\-*]+", s):
    raise ValueError(f"not a tiny expression: {s!r}")
  return str(eval(s, {"__builtins__": {}}))  # noqa: S307 - input restricted to digits/+-*


def _list_part(s: str) -> list[int]:
  return _nums(s.split(";")[0].split("=", 1)[1])


SKILLS: tuple[Skill, ...] = (
  # --- arithmetic: input "a, b"
  Skill(
    "add",
    "arithmetic",
    "Add the two numbers.",
    (
      "Add the two numbers.",
      "What is the sum of these numbers?",
      "Compute the total of the two numbers.",
      "Give a plus b.",
    ),
    _two_numbers(99),
    lambda s: str(sum(_nums(s))),
  ),
  Skill(
    "subtract",
    "arithmetic",
    "Subtract the second number from the first.",
    (
      "Subtract the second number from the first.",
      "What is the first number minus the second?",
      "Compute the difference a minus b.",
      "Take the second number away from the first.",
    ),
    _two_numbers(99),
    lambda s: str(_nums(s)[0] - _nums(s)[1]),
  ),
  Skill(
    "multiply",
    "arithmetic",
    "Multiply the two numbers.",
    (
      "Multiply the two numbers.",
      "What is the product of these numbers?",
      "Compute a times b.",
      "Give the result of multiplying them.",
    ),
    _two_numbers(12, 2),
    lambda s: str(_nums(s)[0] * _nums(s)[1]),
  ),
  Skill(
    "max",
    "arithmetic",
    "Give the larger number.",
    (
      "Give the larger number.",
      "Which of the two numbers is bigger?",
      "Return the maximum of the two numbers.",
      "Pick the greater number.",
    ),
    _two_numbers(99),
    lambda s: str(max(_nums(s))),
  ),
  # --- strings: input a lowercase word
  Skill(
    "reverse",
    "strings",
    "Reverse the word.",
    (
      "Reverse the word.",
      "Write the word backwards.",
      "Spell the word in reverse order.",
      "What is the word read from right to left?",
    ),
    _word,
    lambda s: s[::-1],
  ),
  Skill(
    "uppercase",
    "strings",
    "Write the word in capital letters.",
    (
      "Write the word in capital letters.",
      "Convert the word to uppercase.",
      "Give the word in upper case.",
      "Capitalize every letter of the word.",
    ),
    _word,
    lambda s: s.upper(),
  ),
  Skill(
    "first_letter",
    "strings",
    "Give the first letter of the word.",
    (
      "Give the first letter of the word.",
      "What letter does the word start with?",
      "Return the initial character of the word.",
    ),
    _word,
    lambda s: s[0],
  ),
  Skill(
    "last_letter",
    "strings",
    "Give the last letter of the word.",
    (
      "Give the last letter of the word.",
      "What letter does the word end with?",
      "Return the final character of the word.",
    ),
    _word,
    lambda s: s[-1],
  ),
  Skill(
    "sort_letters",
    "strings",
    "Sort the letters of the word alphabetically.",
    (
      "Sort the letters of the word alphabetically.",
      "Put the letters in alphabetical order.",
      "Rearrange the word's letters from a to z.",
    ),
    _word,
    lambda s: "".join(sorted(s)),
  ),
  Skill(
    "count_letters",
    "strings",
    "Count the letters in the word.",
    (
      "Count the letters in the word.",
      "How many letters does the word have?",
      "What is the length of the word?",
    ),
    _word,
    lambda s: str(len(s)),
  ),
  # --- code: input a Python list (and index / expression)
  Skill(
    "list_len",
    "code",
    "Evaluate len(xs).",
    ("Evaluate len(xs).", "What does len(xs) return?", "How many items are in xs?"),
    _int_list,
    lambda s: str(len(_list_part(s))),
  ),
  Skill(
    "list_sum",
    "code",
    "Evaluate sum(xs).",
    ("Evaluate sum(xs).", "What does sum(xs) return?", "Add up the items of xs."),
    _int_list,
    lambda s: str(sum(_list_part(s))),
  ),
  Skill(
    "list_index",
    "code",
    "Evaluate xs[i].",
    ("Evaluate xs[i].", "What is the value of xs[i]?", "Return the item of xs at index i."),
    _list_and_index,
    lambda s: str(_list_part(s)[_nums(s.split(";")[1])[0]]),
  ),
  Skill(
    "python_expr",
    "code",
    "Evaluate the Python expression.",
    (
      "Evaluate the Python expression.",
      "What does this expression compute to?",
      "Give the value Python prints for this expression.",
    ),
    _expr,
    _eval_expr,
  ),
)
SKILLS_BY_NAME = {s.name: s for s in SKILLS}
DOMAINS = tuple(dict.fromkeys(s.domain for s in SKILLS))


def task_instruction(skill: str) -> str:
  """Canonical short instruction of a skill (for per-task masks)."""
  return SKILLS_BY_NAME[skill].task_instruction


def is_eval_input(skill: str, inp: str) -> bool:
  """Whether (skill, input) is reserved for the eval split (a stable hash bucket)."""
  h = hashlib.blake2b(f"{skill}\x00{inp}".encode(), digest_size=8).digest()
  return int.from_bytes(h, "little") % EVAL_BUCKETS == 0


def make_example(skill: Skill, instruction: str, inp: str) -> dict[str, str]:
  return {
    "skill": skill.name,
    "domain": skill.domain,
    "instruction": instruction,
    "input": inp,
    "prompt": f"{instruction}\n{inp}",
    "answer": skill.solve(inp),
  }


def example(
  split: str, seed: int, index: int, skills: Sequence[str] | None = None
) -> dict[str, str]:
  """Example `index` of `split` ("train" | "eval"): skill round-robin, rest drawn by seed."""
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  names = list(skills) if skills else [s.name for s in SKILLS]
  skill = SKILLS_BY_NAME[names[index % len(names)]]
  rng = random.Random(f"{split}/{seed}/{index}")
  for _ in range(10_000):
    inp = skill.make_input(rng)
    if is_eval_input(skill.name, inp) == (split == "eval"):
      return make_example(skill, rng.choice(skill.instructions), inp)
  raise RuntimeError(f"could not draw a {split} input for skill {skill.name}")


def generate(
  split: str, n: int, seed: int = 0, skills: Sequence[str] | None = None
) -> list[dict[str, str]]:
  """`n` examples of `split`, deterministic in (split, seed, skills)."""
  unknown = set(skills or ()) - set(SKILLS_BY_NAME)
  if unknown:
    raise ValueError(f"unknown skills {sorted(unknown)}; known: {sorted(SKILLS_BY_NAME)}")
  return [example(split, seed, i, skills) for i in range(n)]


def normalize_answer(text: str) -> str:
  """First line, outer whitespace/quotes/backticks and a trailing period removed, spaces
  collapsed. Case is kept (uppercase is a skill)."""
  line = text.strip().split("\n", 1)[0].strip()
  line = line.strip("`\"' ").rstrip(".").strip()
  return re.sub(r"\s+", " ", line)


def exact_match(pred: str, answer: str) -> bool:
  """Exact match after `normalize_answer` on both sides."""
  return normalize_answer(pred) == normalize_answer(answer)
