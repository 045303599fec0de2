"""Sources materialised as TFDS datasets (array_record; TensorFlow not needed) and read back
with `builder.as_data_source(split)`: random-access sequences of dicts that Grain reads.

One builder class, `IfpRecords`, serves every local source kind; each source becomes a builder
config named ``{kind}_{digest}``, where the digest hashes the source's options, a fingerprint of
its inputs (file contents, generator versions) and `FORMAT_VERSION`. Changed inputs or options
give a new config (rebuilt); unchanged ones are read from `data_dir` without regenerating.
Records are written once, in one pass, from lists produced before the builder runs, so an empty
corpus or a malformed line fails early with a clear ValueError and the counts are exact.

Record fields (all strings) by kind:
  text          text, key (document: file key or ``file:line``), piece (``i/n``: piece i of
                the document's n bounded pieces, see `split_pieces`)    splits train / eval
  jsonl_sft     messages (JSON list of {role, content}), where  splits train / eval
  reasoning_gym task, question, answer                          splits train / eval
  skills        skill, domain, instruction, input, prompt, answer   splits train / eval
A split with no records is not written; asking for it raises ValueError. Build statistics
(documents, skipped malformed lines, ...) are kept in the dataset's metadata.

Several hosts: each host materialises its sources itself. Give each host a local `data_dir`,
or build once (e.g. process 0, then a barrier) when `data_dir` is shared.

`kind="tfds"` routes to the TFDS catalog (`tfds.data_source(name, ...)`), which needs the
dataset prepared already (most catalog builders need TensorFlow to prepare).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import tensorflow_datasets as tfds
from etils import epath

from ifp_jax.data import skills, sources

FORMAT_VERSION = 2  # bump when record contents for the same inputs change (2: text pieces)
SPLITS = ("train", "eval")
FIELDS = {
  "text": ("text", "key", "piece"),
  "jsonl_sft": ("messages", "where"),
  "reasoning_gym": ("task", "question", "answer"),
  "skills": ("skill", "domain", "instruction", "input", "prompt", "answer"),
}
Records = dict[str, list[dict[str, str]]]


def default_data_dir() -> str:
  """`$IFP_JAX_DATA_DIR`, else `~/.cache/ifp_jax/tfds`."""
  default = pathlib.Path("~/.cache/ifp_jax/tfds").expanduser()
  return os.environ.get("IFP_JAX_DATA_DIR") or str(default)


@dataclasses.dataclass
class IfpRecordsConfig(tfds.core.BuilderConfig):
  """Builder config: the record fields and (only while building) the records themselves."""

  fields: tuple[str, ...] = ()
  records: Records | None = None
  metadata: dict[str, Any] | None = None


class _ThisModulePath:
  """`code_path` for `IfpRecords`: TFDS's own lookup for builders defined in a package imports
  `importlib_resources`, which it does not declare on Python >= 3.9; this avoids that."""

  def __get__(self, obj: Any, objtype: Any = None) -> epath.Path:
    return epath.Path(__file__)


class IfpRecords(tfds.core.GeneratorBasedBuilder):
  """Writes the config's pre-computed records (all fields `Text`) per split."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = _ThisModulePath()

  def _info(self) -> tfds.core.DatasetInfo:
    fields = self.builder_config.fields
    return tfds.core.DatasetInfo(
      builder=self,
      description="ifp_jax local source",
      features=tfds.features.FeaturesDict({f: tfds.features.Text() for f in fields}),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    cfg = self.builder_config
    if cfg.records is None:
      raise RuntimeError("IfpRecords builds only through builders.materialize()")
    self.info.metadata.update(cfg.metadata or {})
    return {s: self._generate_examples(recs) for s, recs in cfg.records.items() if recs}

  def _generate_examples(self, records: list[dict[str, str]]):
    for i, rec in enumerate(records):
      yield i, rec


@dataclasses.dataclass
class Materialized:
  """A prepared source: `data_source(split)` is a random-access sequence of record dicts."""

  name: str
  kind: str
  builder: Any
  split_sizes: dict[str, int]
  metadata: dict[str, Any]
  catalog_name: str | None = None
  catalog_dir: str | None = None

  def data_source(self, split: str) -> Sequence[Mapping[str, Any]]:
    if self.catalog_name is not None:
      return tfds.data_source(
        self.catalog_name, split=split, data_dir=self.catalog_dir, download=False
      )
    if not self.split_sizes.get(split):
      raise ValueError(
        f"source {self.name!r} ({self.kind}) has no records in split {split!r} "
        f"(splits: {self.split_sizes})"
      )
    return self.builder.as_data_source(split)


def _opt(options: Mapping[str, Any], key: str, default: Any) -> Any:
  value = options.get(key, default)
  return default if value is None else value


def as_list(value: Any) -> list[Any]:
  """A list option given as a list or tuple, or on the command line as a comma-separated string
  (alone or as tuple items: ``'a,b'`` and ``('a', 'b')`` both give ["a", "b"])."""
  items = [value] if isinstance(value, (str, bytes)) else list(value or ())
  out: list[Any] = []
  for item in items:
    if isinstance(item, (str, bytes)):
      text = item.decode() if isinstance(item, bytes) else item
      out += [x.strip() for x in text.split(",") if x.strip()]
    else:
      out.append(item)
  return out


def _digest(*parts: Any) -> str:
  blob = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _package_version(name: str) -> str:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return "missing"


def _split_by_fraction(items: list[tuple[str, dict[str, str]]], fraction: float) -> Records:
  out: Records = {"train": [], "eval": []}
  for key, rec in items:
    out["eval" if sources.in_eval_split(key, fraction) else "train"].append(rec)
  return out


def split_pieces(text: str, max_chars: int) -> list[str]:
  """`text` cut into pieces of at most `max_chars` characters (0: one piece), at the last line
  break of each window when there is one in its second half, else mid-line. Joined, the pieces
  are `text` again. Bounded pieces, shuffled globally, keep one long document from supplying
  many consecutive rows of a CPT stream."""
  if max_chars <= 0 or len(text) <= max_chars:
    return [text]
  pieces, start = [], 0
  while len(text) - start > max_chars:
    cut = text.rfind("\n", start + max_chars // 2, start + max_chars)
    end = cut + 1 if cut >= 0 else start + max_chars
    pieces.append(text[start:end])
    start = end
  pieces.append(text[start:])
  return pieces


# --- per-kind planning: (fingerprint parts, producer of (records, metadata))
Plan = tuple[list[Any], Callable[[], tuple[Records, dict[str, Any]]]]


def _plan_text(paths: Sequence[str], options: Mapping[str, Any], skip_malformed: bool) -> Plan:
  files = sources.discover_files(
    paths,
    extensions=tuple(as_list(_opt(options, "extensions", sources.DEFAULT_EXTENSIONS))),
    exclude_dirs=tuple(as_list(_opt(options, "exclude_dirs", sources.DEFAULT_EXCLUDE_DIRS))),
    member_glob=_opt(options, "member_glob", "*"),
    max_files=_opt(options, "max_files", 0),
    max_bytes=_opt(options, "max_bytes", 0),
  )
  fraction = float(_opt(options, "eval_fraction", 0.0))
  text_field = _opt(options, "text_field", "text")
  piece_chars = int(_opt(options, "piece_chars", 0))
  if piece_chars < 0:
    raise ValueError(f"text source option piece_chars={piece_chars} must be >= 0 (0: whole docs)")

  def produce() -> tuple[Records, dict[str, Any]]:
    errors = sources.MalformedLines(skip_malformed)
    docs = list(sources.read_documents(files, text_field=text_field, errors=errors))
    if not docs:
      raise ValueError(
        f"empty corpus: the {len(files)} file(s) under {list(paths)} hold no "
        f"text (e.g. {[f.path for f in files[:3]]})"
      )
    # Held out by file: a file's documents all go to one split (jsonl lines: by content).
    recs = _split_by_fraction(
      [(text if ".jsonl:" in key else key, {"text": text, "key": key}) for key, text in docs],
      fraction,
    )
    if fraction > 0 and not recs["eval"] and len(recs["train"]) > 1:
      recs["eval"].append(recs["train"].pop(0))  # at least one held-out document
    for split, docs_of_split in recs.items():  # after the split: a document's pieces stay in it
      recs[split] = [
        {"text": piece, "key": rec["key"], "piece": f"{i}/{len(pieces)}"}
        for rec in docs_of_split
        for pieces in [split_pieces(rec["text"], piece_chars)]
        for i, piece in enumerate(pieces)
      ]
    meta = {
      "files": len(files),
      "documents": len(docs),
      "pieces": {split: len(r) for split, r in recs.items()},
      "bytes": sum(len(t.encode()) for _, t in docs),
      "skipped_lines": errors.count,
      "skipped_examples": errors.examples,
      "skipped_binary_files": len(errors.binary_files),
    }
    return recs, meta

  fp = [sources.fingerprint_files(files), fraction, text_field, piece_chars]
  if any(f.path.endswith(".jsonl") for f in files):
    fp.append(bool(skip_malformed))  # skip mode changes which lines are in the dataset
  return fp, produce


def _plan_jsonl_sft(paths: Sequence[str], options: Mapping[str, Any], skip_malformed: bool) -> Plan:
  files = sources.discover_files(
    paths, extensions=(".jsonl", ".json"), max_files=_opt(options, "max_files", 0)
  )
  fraction = float(_opt(options, "eval_fraction", 0.0))

  def produce() -> tuple[Records, dict[str, Any]]:
    errors = sources.MalformedLines(skip_malformed)
    items = [
      (json.dumps(m, sort_keys=True), {"messages": json.dumps(m), "where": where})
      for where, m in sources.read_sft_jsonl(files, errors)
    ]
    if not items:
      raise ValueError(
        f"empty SFT data: no valid records in {[f.path for f in files]} "
        f"({errors.count} malformed lines skipped)"
      )
    meta = {
      "files": len(files),
      "records": len(items),
      "skipped_lines": errors.count,
      "skipped_examples": errors.examples,
    }
    return _split_by_fraction(items, fraction), meta

  return [sources.fingerprint_files(files), fraction, skip_malformed], produce


def _plan_reasoning_gym(options: Mapping[str, Any]) -> Plan:
  tasks = as_list(_opt(options, "tasks", ["basic_arithmetic"]))
  size, eval_size = int(_opt(options, "size", 1000)), int(_opt(options, "eval_size", 100))
  seed = int(_opt(options, "seed", 0))
  task_kwargs = {k: dict(v) for k, v in dict(_opt(options, "task_kwargs", {})).items()}
  train_seed, eval_seed = sources.reasoning_gym_seeds(seed)

  def produce() -> tuple[Records, dict[str, Any]]:
    recs: Records = {"train": [], "eval": []}
    dropped = 0
    for task in tasks:
      kw = task_kwargs.get(task, {})
      train = sources.reasoning_gym_examples(task, size, train_seed, **kw)
      seen = {r["question"] for r in train}
      evals = sources.reasoning_gym_examples(task, eval_size, eval_seed, **kw)
      recs["train"] += train
      recs["eval"] += [r for r in evals if r["question"] not in seen]
      dropped += sum(r["question"] in seen for r in evals)
    meta = {
      "tasks": tasks,
      "train_seed": train_seed,
      "eval_seed": eval_seed,
      "eval_dropped_duplicates": dropped,
    }
    return recs, meta

  fp = [tasks, size, eval_size, seed, task_kwargs, _package_version("reasoning-gym")]
  return fp, produce


def _plan_skills(options: Mapping[str, Any]) -> Plan:
  names = as_list(_opt(options, "skills", [])) or None
  n_train, n_eval = int(_opt(options, "num_train", 20000)), int(_opt(options, "num_eval", 500))
  seed = int(_opt(options, "seed", 0))
  code = hashlib.sha256(pathlib.Path(skills.__file__).read_bytes()).hexdigest()

  def produce() -> tuple[Records, dict[str, Any]]:
    recs = {
      "train": skills.generate("train", n_train, seed, names),
      "eval": skills.generate("eval", n_eval, seed, names),
    }
    return recs, {"skills": names or [s.name for s in skills.SKILLS]}

  return [names, n_train, n_eval, seed, code], produce


def materialize(
  name: str,
  kind: str,
  paths: Sequence[str],
  options: Mapping[str, Any],
  *,
  data_dir: str | None = None,
  skip_malformed: bool = False,
) -> Materialized:
  """Prepares (or reuses) the TFDS dataset of one source and returns a handle to read it."""
  options = dict(options or {})
  paths = as_list(paths)
  data_dir = data_dir or default_data_dir()
  if kind == "tfds":
    catalog = _opt(options, "name", "") or (paths[0] if paths else "")
    if not catalog:
      raise ValueError(f"source {name!r}: kind 'tfds' needs options.name (e.g. 'imdb_reviews')")
    return Materialized(
      name,
      kind,
      None,
      {},
      {},
      catalog_name=catalog,
      catalog_dir=_opt(options, "data_dir", "") or None,
    )
  if kind == "text":
    fp, produce = _plan_text(paths, options, skip_malformed)
  elif kind == "jsonl_sft":
    fp, produce = _plan_jsonl_sft(paths, options, skip_malformed)
  elif kind == "reasoning_gym":
    fp, produce = _plan_reasoning_gym(options)
  elif kind == "skills":
    fp, produce = _plan_skills(options)
  else:
    raise ValueError(
      f"source {name!r}: unknown kind {kind!r} (use one of {sorted([*FIELDS, 'tfds'])})"
    )
  config = IfpRecordsConfig(
    name=f"{kind}_{_digest(kind, fp)}", fields=FIELDS[kind], description=f"ifp_jax {kind} source"
  )
  builder = IfpRecords(config=config, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    config.records, config.metadata = produce()
    builder.download_and_prepare()
    config.records = None
  sizes = {s: builder.info.splits[s].num_examples for s in SPLITS if s in builder.info.splits}
  return Materialized(name, kind, builder, sizes, dict(builder.info.metadata))
