"""The trainer's data entry point: `default_data_config()` and `build_iterator(...)`.

Batch format: a dict of host-local numpy arrays, the same for CPT and SFT, laid out as
`ifp_jax/data/batch.py` FIELDS says (B = per-host batch size; names, shapes, dtypes, pad values).
CPT (`packing.py`): C = num_chunks - 1, P = T / num_chunks, loss zero on the first chunk, mask of
chunk j used on chunk j+1. SFT (`sft.py`, `packing.pack_sft`): up to C = `sft_pack`
conversations per row, each a segment (`segment_ids`) with its own predictor input
(P = max_prompt_len, `mask_index` = its segment), loss on assistant output tokens only.

Pipeline per source (each source is one TFDS dataset, see `builders.py`): Grain
``MapDataset.source`` -> this host's records ``[process_index::process_count]`` (disjoint
across hosts) -> shuffle (a global index shuffle, reshuffled every epoch) -> repeat ->
decode/tokenize -> (CPT: pack rows, window-shuffle rows; SFT: format, pack conversations)
-> examples. CPT text records are bounded
pieces of documents (`options.piece_chars`, cut when the source is built), so the global shuffle
makes consecutive rows come from many documents in proportion to their size, however long the
documents are; EOS follows a document's last piece only. Sources are mixed by weight (Grain's
deterministic proportional interleave), then batched. The iterator's `get_state()` is
JSON-serialisable and `set_state(state)` resumes with exactly the same later batches; `stats`
counts examples, truncations and skipped lines, and `take_window()` gives the stream statistics
since its last call (distinct documents, largest share of rows one document supplied).

Replay: an SFT stage may list `text` sources; their rows are CPT rows (packed, chunk routing)
mixed into the SFT batches by weight, with predictor inputs padded to a common length.

A predictor with its own tokenizer (`predictor_tokenizer`): SFT prompts are encoded with it and
each CPT chunk's text is re-encoded with it (`predictor_input.py`), P = max_prompt_len.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Mapping, Sequence

import grain
import ml_collections
import numpy as np

from ifp_jax.data import builders, packing, predictor_input, sft, sources
from ifp_jax.data.batch import pad_rows
from ifp_jax.data.tokenization import Tokenizer

CPT_KINDS = ("text", "tfds")
SFT_KINDS = ("jsonl_sft", "reasoning_gym", "skills", "tfds", "text")  # text: CPT replay
PIECE_ROWS = 8  # default piece_chars = PIECE_ROWS * seq_len
_COUNTERS = ("_truncated", "_prompt_truncated", "_no_loss", "_real_tokens")


def source_config(
  kind: str, paths: Sequence[str] = (), weight: float = 1.0, split: str = "train", **options: Any
) -> ml_collections.ConfigDict:
  """One source entry (see `default_data_config` for the meaning of each field). Lists are
  stored as tuples so that the command line can override them (``--config....paths=a,b`` or
  ``"('a', 'b')"``; ml_collections cannot override lists)."""
  return ml_collections.ConfigDict(
    {
      "kind": kind,
      "paths": tuple(builders.as_list(paths)),
      "weight": float(weight),
      "split": split,
      "options": {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()},
    }
  )


def default_data_config() -> ml_collections.ConfigDict:
  """The documented data schema; experiment configs override fields of it."""
  c = ml_collections.ConfigDict()
  c.tokenizer = "bytes"  # load_tokenizer spec: "bytes" | "smollm2" | "gguf:P" | "hf:P" | "spm:P"
  # With its own tokenizer the predictor reads every text re-encoded with it (SFT prompts, CPT
  # chunks as text, instructions at inference) at length max_prompt_len (data/predictor_input.py).
  c.predictor_tokenizer = ""  # spec; "" = model.predictor_init_from's own, else data.tokenizer
  c.data_dir = ""  # TFDS dir of built sources; "" -> $IFP_JAX_DATA_DIR or ~/.cache/ifp_jax/tfds
  c.num_chunks = 2  # CPT: chunks K per row (seq_len % K == 0); C = K-1 predictor inputs of T/K
  c.max_prompt_len = 64  # SFT (and CPT, own predictor tokenizer): predictor input length P
  # SFT conversations packed per row, at most (greedy in stream order; each its own segment:
  # attention and positions confined to it, its own predictor input, so C = sft_pack).
  c.sft_pack = 4  # 1 = one conversation per row, the rest padding
  c.truncate = "left_prompt"  # SFT sequences longer than seq_len: "left_prompt" | "right"
  c.skip_malformed = False  # JSONL: False -> ValueError "file:line: problem"; True -> skip+count
  c.shuffle = True  # shuffle each source's records (reshuffled every epoch)
  c.shuffle_window = 1024  # CPT: shuffle packed rows in windows of this many rows (0: off);
  #                          the window is refilled on start and on restore (costs tokenizing it)
  c.read_threads = 2  # Grain reader threads per source (decode + tokenize run there)
  c.prefetch = 64  # Grain prefetch buffer per source, in records
  # Sources per stage: name -> entry with
  #   kind    "text" (CPT) | "jsonl_sft" | "reasoning_gym" | "skills" (SFT) | "tfds" (either)
  #   paths   files / folders / globs / archives / aliases "<stdlib>", "<python-docs>"
  #           (text, jsonl_sft); unused by reasoning_gym and skills. A tuple; on the command
  #           line a comma-separated string: --config.data.cpt.sources.stdlib.paths=/a,/b
  #   weight  mixture weight (relative; 0 disables the source)
  #   split   split read for training ("train"); eval iterators pass split= explicitly
  #   options kind-specific:
  #     text:          task (the text every predictor input reads instead of its chunk: per-task
  #                    CPT; "" = the chunk), extensions, exclude_dirs, member_glob (archives),
  #                    max_files, max_bytes
  #                    (0 = no limit), eval_fraction (held out by file hash), text_field
  #                    (jsonl), piece_chars (documents cut into pieces of at most this many
  #                    characters at build time; -1: 8 * seq_len; 0: whole documents)
  #     jsonl_sft:     eval_fraction (by record hash), max_files
  #     reasoning_gym: tasks (tuple or "a,b"), size / eval_size (per task, <= 2**20), seed (0..2047;
  #                    train/eval item seeds are disjoint blocks, see sources.reasoning_gym_seeds),
  #                    task_kwargs {task: {kwarg: value}}
  #     skills:        skills (tuple or "a,b", () = all 14), num_train, num_eval, seed
  # A `text` source in sft.sources is CPT replay: text rows (CPT chunk routing) mixed into SFT.
  #     tfds:          name (catalog name), data_dir, text_key (CPT) or messages_key /
  #                    prompt_key + response_key (SFT)
  c.cpt = ml_collections.ConfigDict()
  c.cpt.sources = ml_collections.ConfigDict(
    {
      "stdlib": source_config(
        "text",
        ["<stdlib>"],
        extensions=[".py"],
        max_files=0,
        max_bytes=0,
        eval_fraction=0.02,
        piece_chars=-1,
      ),
    }
  )
  c.sft = ml_collections.ConfigDict()
  c.sft.sources = ml_collections.ConfigDict(
    {
      "skills": source_config("skills", num_train=20000, num_eval=500, seed=0),
    }
  )
  return c


def _text(value: Any) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _messages_fn(kind: str, options: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], list]:
  """Record -> chat messages for each SFT source kind."""
  if kind == "jsonl_sft":
    return lambda r: json.loads(_text(r["messages"]))
  if kind == "skills":
    return lambda r: [
      {"role": "user", "content": _text(r["prompt"])},
      {"role": "assistant", "content": _text(r["answer"])},
    ]
  if kind == "reasoning_gym":
    return lambda r: [
      {"role": "user", "content": _text(r["question"])},
      {"role": "assistant", "content": _text(r["answer"])},
    ]
  if options.get("messages_key"):
    key = options["messages_key"]
    return lambda r: (
      json.loads(_text(r[key]))
      if isinstance(r[key], (str, bytes))
      else [{"role": _text(m["role"]), "content": _text(m["content"])} for m in r[key]]
    )
  pk, rk = options.get("prompt_key", "prompt"), options.get("response_key", "response")
  return lambda r: [
    {"role": "user", "content": _text(r[pk])},
    {"role": "assistant", "content": _text(r[rk])},
  ]


def _named_sources(cfg: Any) -> list[tuple[str, Any]]:
  if isinstance(cfg, (list, tuple)):
    return [(f"{s['kind']}{i}", s) for i, s in enumerate(cfg)]
  return list(cfg.items())


def _doc_id(record: Mapping[str, Any]) -> int:
  """A document's id in the stream statistics (>= 0): hash of its key; -1 without a key."""
  return sources.stable_hash(_text(record["key"])) % 2**63 if "key" in record else -1


def _ends_document(record: Mapping[str, Any]) -> bool:
  """Whether EOS follows this record: the last piece of its document (or no pieces at all)."""
  if "piece" not in record:
    return True
  i, n = _text(record["piece"]).split("/")
  return int(i) == int(n) - 1


def task_inputs(example: dict[str, Any], task_ids: list[int], pad_id: int) -> dict[str, Any]:
  """A CPT example whose every predictor input [C, P] reads `task_ids` (cut to P), right-padded:
  the source's task sentence instead of the chunk's text (per-task CPT; masks still serve the
  next chunk, so the loss is the same tokens')."""
  c, p = example["predictor_ids"].shape
  n = max(1, min(len(task_ids), p))
  ids = np.full((c, p), pad_id, np.int32)
  ids[:, :n] = np.asarray(task_ids[:n] or [pad_id], np.int32)
  return {**example, "predictor_ids": ids, "predictor_lengths": np.full(c, n, np.int32)}


def _pad_predictor(
  example: dict[str, Any], length: int, pad_id: int, inputs: int = 0
) -> dict[str, Any]:
  """predictor_ids [C, P] right-padded to [C, length], and with `inputs` > C to [inputs, length]
  (unused inputs: one pad token): replay mixes CPT rows (C = 1) with packed SFT rows."""
  ids, lengths = example["predictor_ids"], example["predictor_lengths"]
  if ids.shape[1] < length:
    fill = np.full((ids.shape[0], length - ids.shape[1]), pad_id, ids.dtype)
    ids = np.concatenate([ids, fill], axis=1)
  if inputs > ids.shape[0]:
    ids = np.concatenate([ids, np.full((inputs - ids.shape[0], ids.shape[1]), pad_id, ids.dtype)])
    lengths = np.concatenate([lengths, np.ones(inputs - lengths.shape[0], lengths.dtype)])
  return {**example, "predictor_ids": ids, "predictor_lengths": lengths}


def predictor_input_len(
  data_cfg: ml_collections.ConfigDict,
  kind: str,
  seq_len: int,
  replay: bool = False,
  own_tokenizer: bool = False,
) -> int:
  """P of a stage's rows (data/batch.py): CPT T / num_chunks (its own tokenizer: the chunk's
  text re-encoded, max_prompt_len), SFT max_prompt_len; replay pads both to the longer."""
  prompt = int(data_cfg.max_prompt_len)
  cpt = prompt if own_tokenizer else seq_len // int(data_cfg.num_chunks)
  if kind == "cpt":
    return cpt
  return max(prompt, cpt) if replay else prompt


def _source_seed(seed: int, index: int) -> int:
  return (seed * 1_000_003 + index * 7_919 + 17) % (2**31 - 1)


class DataIterator:
  """Batches of the module's format; `get_state`/`set_state` resume exactly; `stats` counts."""

  def __init__(
    self,
    dataset: grain.IterDataset,
    names: list[str],
    batch_size: int,
    pad_id: int,
    static_stats: dict[str, Any],
    predictor_pad_id: int | None = None,
  ) -> None:
    self._it = iter(dataset)
    self._names, self._batch_size, self._pad_id = names, batch_size, pad_id
    self._predictor_pad_id = predictor_pad_id
    self._static = static_stats
    self._counts = {
      "batches": 0,
      "examples": 0,
      "truncated": 0,
      "prompt_truncated": 0,
      "no_loss": 0,
      "real_tokens": 0,
      "token_slots": 0,
      "per_source": {n: 0 for n in names},
    }
    self._window: list[np.ndarray] = []  # doc ids of the rows since the last take_window()
    self._window_tokens = [0, 0]  # real tokens, token slots (rows x T) since then

  @property
  def stats(self) -> dict[str, Any]:
    return {**copy.deepcopy(self._static), **copy.deepcopy(self._counts)}

  def __iter__(self) -> "DataIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self._it))
    source = batch.pop("_source")
    self._window.append(batch.pop("_doc"))
    for i, n in zip(*np.unique(source, return_counts=True), strict=True):
      self._counts["per_source"][self._names[int(i)]] += int(n)
    real = int(batch["_real_tokens"].sum()) if "_real_tokens" in batch else 0
    for key in _COUNTERS:
      if key in batch:
        self._counts[key[1:]] += int(batch.pop(key).sum())
    slots = self._batch_size * batch["input_ids"].shape[1]  # filler rows of a short batch too
    self._counts["token_slots"] += slots
    self._window_tokens[0] += real
    self._window_tokens[1] += slots
    self._counts["batches"] += 1
    self._counts["examples"] += int(source.shape[0])
    return self._pad(batch) if source.shape[0] < self._batch_size else batch

  def take_window(self) -> dict[str, float]:
    """Stream statistics of the rows since the last call (text rows only; SFT rows carry no
    document): `data_docs` distinct documents, `data_max_doc_share` the largest fraction of
    those rows one document supplied, `data_doc_rows` the rows counted; `data_real_frac` the
    fraction of token slots that hold real tokens (not padding). Also in `stats`."""
    docs = np.concatenate(self._window) if self._window else np.zeros(0, np.int64)
    docs = docs[docs >= 0]
    self._window = []
    counts = np.unique(docs, return_counts=True)[1]
    out = {
      "data_docs": int(counts.size),
      "data_max_doc_share": float(counts.max() / docs.size) if docs.size else 0.0,
      "data_doc_rows": int(docs.size),
      "data_real_frac": self._window_tokens[0] / max(self._window_tokens[1], 1),
    }
    self._window_tokens = [0, 0]
    self._counts["window"] = out
    return out

  def _pad(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Last partial batch of a finite iterator: filler rows with zero loss."""
    return pad_rows(batch, self._batch_size, self._pad_id, self._predictor_pad_id)

  def get_state(self) -> dict[str, Any]:
    return json.loads(
      json.dumps(
        {"grain": self._it.get_state(), "counts": self._counts},
        default=lambda x: x.item() if hasattr(x, "item") else str(x),
      )
    )

  def set_state(self, state: Mapping[str, Any]) -> None:
    self._it.set_state(copy.deepcopy(state["grain"]))
    # Counters added since the state was written start at 0.
    self._counts = {**self._counts, **copy.deepcopy(dict(state["counts"]))}


def build_iterator(
  data_cfg: ml_collections.ConfigDict,
  tokenizer: Tokenizer,
  *,
  kind: str,
  seq_len: int,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  seed: int = 0,
  split: str | None = None,
  num_epochs: int | None = None,
  predictor_tokenizer: Tokenizer | None = None,
) -> DataIterator:
  """Per-host iterator of `batch_size` rows of `seq_len` tokens for stage `kind` ("cpt"|"sft").

  `split` overrides every source's configured split (e.g. "eval"); `num_epochs=None` repeats
  forever, otherwise the iterator stops after that many passes (last batch padded with
  zero-loss rows; with several sources it stops when the first one runs out).
  `predictor_tokenizer` (None or `tokenizer`: shared) encodes every predictor input.
  """
  ptok = predictor_tokenizer or tokenizer
  own = ptok is not tokenizer
  if kind not in ("cpt", "sft"):
    raise ValueError(f"kind must be 'cpt' or 'sft', got {kind!r}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count})")
  allowed = CPT_KINDS if kind == "cpt" else SFT_KINDS
  if kind == "cpt" and (data_cfg.num_chunks < 2 or seq_len % data_cfg.num_chunks):
    raise ValueError(f"num_chunks={data_cfg.num_chunks} must be >= 2 and divide {seq_len=}")
  entries = [(n, s) for n, s in _named_sources(data_cfg[kind].sources) if s["weight"] > 0]
  if not entries:
    raise ValueError(f"data config has no {kind} source with weight > 0")
  replay = kind == "sft" and any(s["kind"] == "text" for _, s in entries)
  if replay and data_cfg.num_chunks != 2:
    raise ValueError(
      f"CPT replay in SFT (a 'text' source in data.sft.sources) needs data.num_chunks == 2 "
      f"(one predictor input per row, like SFT), got {data_cfg.num_chunks}"
    )
  if replay and seq_len % 2:
    raise ValueError(f"CPT replay in SFT needs an even seq_len, got {seq_len}")
  # Predictor input length of every row (replay: CPT chunks and SFT prompts padded to one P).
  pred_len = predictor_input_len(data_cfg, kind, seq_len, True, own) if replay else 0
  sft_inputs = int(data_cfg.get("sft_pack", 1)) if kind == "sft" else 0  # C of an SFT row
  read = grain.ReadOptions(
    num_threads=data_cfg.read_threads, prefetch_buffer_size=data_cfg.prefetch
  )
  datasets, names, weights = [], [], []
  static: dict[str, Any] = {"records": {}, "skipped_lines": {}, "host_records": {}}
  for index, (name, src) in enumerate(entries):
    if src["kind"] not in allowed:
      raise ValueError(f"{kind} source {name!r} has kind {src['kind']!r}; use one of {allowed}")
    options = dict(src.get("options") or {})
    # Per-task CPT: every predictor input of this source's rows reads `task`, not its chunk. Not
    # a build option: the built records (and their cache key) stay the same.
    task = str(options.pop("task", "") or "")
    if task and src["kind"] != "text":
      raise ValueError(f"source {name!r}: option task is for 'text' sources, not {src['kind']!r}")
    task_ids = ptok.encode(task) if task else None
    if src["kind"] == "text" and int(options.get("piece_chars", -1) or 0) < 0:
      options["piece_chars"] = PIECE_ROWS * seq_len
    mat = builders.materialize(
      name,
      src["kind"],
      list(src.get("paths") or ()),
      options,
      data_dir=data_cfg.data_dir or None,
      skip_malformed=data_cfg.skip_malformed,
    )
    the_split = split or src.get("split", "train")
    records = mat.data_source(the_split)
    ds = grain.MapDataset.source(records)[process_index::process_count]
    static["records"][name] = dict(mat.split_sizes) or {the_split: len(records)}
    static["skipped_lines"][name] = int(mat.metadata.get("skipped_lines", 0))
    static.setdefault("skipped_binary_files", {})[name] = int(
      mat.metadata.get("skipped_binary_files", 0)
    )
    static["host_records"][name] = len(ds)
    if len(ds) == 0:
      raise ValueError(
        f"source {name!r} split {the_split!r} has {len(records)} records: too "
        f"few for {process_count} hosts"
      )
    sseed = _source_seed(seed, index)
    if data_cfg.shuffle:
      ds = ds.shuffle(seed=sseed)
    ds = ds.repeat(num_epochs)
    if kind == "cpt" or src["kind"] == "text":
      text_key = "text" if src["kind"] == "text" else options.get("text_key", "text")
      it = ds.map(
        lambda r, k=text_key: (
          np.asarray(
            tokenizer.encode(_text(r[k])) + [tokenizer.eos_id] * _ends_document(r), np.int32
          ),
          _doc_id(r),
        )
      ).to_iter_dataset(read)

      def routed(row_doc, i=index, task_ids=task_ids):
        ex = {
          **packing.route_cpt_row(row_doc[0], data_cfg.num_chunks),
          "_source": np.int32(i),
          "_doc": row_doc[1],
          **{k: np.int32(0) for k in _COUNTERS},
          "_real_tokens": np.int32(seq_len),
        }
        if own:  # the predictor reads the chunk's text in its own tokens
          ex = predictor_input.retokenize_chunks(ex, tokenizer, ptok, data_cfg.max_prompt_len)
        if task_ids is not None:
          ex = task_inputs(ex, task_ids, ptok.pad_id)
        return _pad_predictor(ex, pred_len, ptok.pad_id, sft_inputs)

      it = packing.PackIterDataset(it, seq_len, with_doc=True).map(routed)
      if data_cfg.shuffle and data_cfg.shuffle_window > 0:
        it = grain.experimental.WindowShuffleIterDataset(
          it, window_size=data_cfg.shuffle_window, seed=sseed
        )
    else:
      to_msgs = _messages_fn(src["kind"], options)
      it = ds.map(
        lambda r, f=to_msgs, i=index: {
          **sft.format_sft(
            tokenizer,
            f(r),
            seq_len=seq_len,
            max_prompt_len=data_cfg.max_prompt_len,
            policy=data_cfg.truncate,
            predictor_tokenizer=ptok,
          ),
          "_source": np.int32(i),
          "_doc": np.int64(-1),
        }
      ).to_iter_dataset(read)
      it = packing.SFTPackIterDataset(it, sft_inputs, tokenizer.pad_id, ptok.pad_id)
      if replay:
        it = it.map(lambda ex: _pad_predictor(ex, pred_len, ptok.pad_id))
    datasets.append(it)
    names.append(name)
    weights.append(float(src["weight"]))
  mixed = datasets[0] if len(datasets) == 1 else grain.IterDataset.mix(datasets, weights)
  batched = mixed.batch(batch_size, drop_remainder=num_epochs is None)
  return DataIterator(batched, names, batch_size, tokenizer.pad_id, static, ptok.pad_id)
