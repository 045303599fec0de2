"""Sources and TFDS builders: errors name file:line, skip-and-count, empty corpora, caching and
rebuilds, held-out split, reasoning-gym seed disjointness."""

import itertools
import json

import pytest

from ifp_jax.data import builders, sources


def _write_jsonl(path, lines):
  path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
  return path


GOOD = [
  {"prompt": "Say hi", "response": "hi"},
  {
    "messages": [
      {"role": "system", "content": "s"},
      {"role": "user", "content": "Q?"},
      {"role": "assistant", "content": "A."},
    ]
  },
]


@pytest.mark.parametrize(
  "bad, problem",
  [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"prompt": "x"}, "'response' must be a string"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "followed by an assistant"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role"),
    ({"text": "neither"}, "expected 'prompt'/'response'"),
  ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, problem):
  f = _write_jsonl(tmp_path / "sft.jsonl", [GOOD[0], "", GOOD[1], bad])
  with pytest.raises(ValueError) as err:
    builders.materialize("s", "jsonl_sft", [str(f)], {}, data_dir=str(tmp_path / "tfds"))
  assert f"{f}:4: " in str(err.value)  # the blank line 2 counts as a line
  assert problem in str(err.value)


def test_skip_malformed_counts(tmp_path):
  f = _write_jsonl(tmp_path / "sft.jsonl", [GOOD[0], "{bad", GOOD[1], {"prompt": 1}, GOOD[0]])
  mat = builders.materialize(
    "s", "jsonl_sft", [str(f)], {}, data_dir=str(tmp_path / "tfds"), skip_malformed=True
  )
  assert mat.metadata["skipped_lines"] == 2
  assert mat.split_sizes == {"train": 3}
  records = mat.data_source("train")
  msgs = sorted(json.loads(records[i]["messages"].decode())[-1]["content"] for i in range(3))
  assert msgs == ["A.", "hi", "hi"]
  with pytest.raises(ValueError, match="no records in split 'eval'"):
    mat.data_source("eval")


def test_empty_corpus_errors_name_paths(tmp_path):
  empty_dir = tmp_path / "nothing_here"
  empty_dir.mkdir()
  with pytest.raises(ValueError, match="nothing_here"):
    builders.materialize("t", "text", [str(empty_dir)], {}, data_dir=str(tmp_path / "tfds"))
  blank = tmp_path / "blank"
  blank.mkdir()
  (blank / "a.txt").write_text("   \n\n")
  (blank / "b.txt").write_text("")
  with pytest.raises(ValueError, match="empty corpus.*blank"):
    builders.materialize("t", "text", [str(blank)], {}, data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match="empty SFT data"):
    builders.materialize(
      "s",
      "jsonl_sft",
      [str(_write_jsonl(tmp_path / "e.jsonl", ["{x"]))],
      {},
      data_dir=str(tmp_path / "tfds"),
      skip_malformed=True,
    )


def test_text_builder_cache_rebuild_and_heldout(tmp_path):
  corpus = tmp_path / "corpus"
  (corpus / "sub").mkdir(parents=True)
  (corpus / "tests").mkdir()
  for i in range(40):
    (corpus / "sub" / f"m{i}.py").write_text(f"x = {i}\n" * (i + 1))
  (corpus / "tests" / "test_x.py").write_text("excluded = True\n")
  (corpus / "notes.bin").write_text("wrong extension\n")
  opts = {"eval_fraction": 0.2, "extensions": [".py"]}
  data_dir = str(tmp_path / "tfds")
  a = builders.materialize("t", "text", [str(corpus)], opts, data_dir=data_dir)
  assert a.split_sizes["train"] + a.split_sizes["eval"] == 40
  assert 1 <= a.split_sizes["eval"] < 20
  keys = {s: {r["key"].decode() for r in a.data_source(s)} for s in ("train", "eval")}
  assert not keys["train"] & keys["eval"]
  assert all(k.startswith("corpus/sub/") for k in keys["train"])
  assert keys["eval"] == {
    k for k in keys["train"] | keys["eval"] if sources.in_eval_split(k, 0.2)
  }  # membership = hash of the key
  # Unchanged inputs: same config (cached, not rebuilt).
  b = builders.materialize("t", "text", [str(corpus)], opts, data_dir=data_dir)
  assert b.builder.builder_config.name == a.builder.builder_config.name
  # Changed content or options: a new config, rebuilt.
  (corpus / "sub" / "m0.py").write_text("changed = 1\n")
  c = builders.materialize("t", "text", [str(corpus)], opts, data_dir=data_dir)
  assert c.builder.builder_config.name != a.builder.builder_config.name
  texts = {r["text"].decode() for s in ("train", "eval") for r in c.data_source(s)}
  assert "changed = 1\n" in texts
  d = builders.materialize("t", "text", [str(corpus)], {**opts, "max_files": 5}, data_dir=data_dir)
  assert sum(d.split_sizes.values()) == 5


def test_text_jsonl_and_limits(tmp_path):
  f = _write_jsonl(
    tmp_path / "docs.jsonl", [{"text": f"doc {i}"} for i in range(10)] + [{"txt": "wrong field"}]
  )
  with pytest.raises(ValueError, match=f"{f}:11: missing string field 'text'"):
    builders.materialize("t", "text", [str(f)], {}, data_dir=str(tmp_path / "tfds"))
  mat = builders.materialize(
    "t", "text", [str(f)], {}, data_dir=str(tmp_path / "tfds"), skip_malformed=True
  )
  assert mat.split_sizes == {"train": 10} and mat.metadata["skipped_lines"] == 1


def test_stdlib_alias_with_limits(tmp_path):
  files = sources.discover_files(["<stdlib>"], extensions=(".py",), max_files=8)
  assert len(files) == 8
  assert not any("/test/" in f"/{f.key}" or "/tests/" in f"/{f.key}" for f in files)
  capped = sources.discover_files(["<stdlib>"], extensions=(".py",), max_bytes=50_000)
  assert sum(f.size for f in capped[:-1]) < 50_000


def test_reasoning_gym_item_seeds_disjoint(tmp_path):
  # reasoning-gym item i of seed s uses Random(s + i): the item-seed ranges must be disjoint.
  block = sources.RG_BLOCK
  train = [range(t, t + block) for t, _ in map(sources.reasoning_gym_seeds, range(50))]
  evals = [range(e, e + block) for _, e in map(sources.reasoning_gym_seeds, range(50))]
  ranges = sorted(train + evals, key=lambda r: r.start)
  assert all(a.stop <= b.start for a, b in itertools.pairwise(ranges))
  assert sources.reasoning_gym_seeds(sources.RG_MAX_SEED)[1] + block <= 2**32
  with pytest.raises(ValueError):
    sources.reasoning_gym_seeds(sources.RG_MAX_SEED + 1)
  pytest.importorskip("reasoning_gym")
  mat = builders.materialize(
    "rg",
    "reasoning_gym",
    [],
    {"tasks": ["basic_arithmetic"], "size": 60, "eval_size": 20, "seed": 3},
    data_dir=str(tmp_path / "tfds"),
  )
  assert (mat.metadata["train_seed"], mat.metadata["eval_seed"]) == (6 * block, 7 * block)
  train_q = {r["question"] for r in mat.data_source("train")}
  eval_q = {r["question"] for r in mat.data_source("eval")}
  assert len(train_q) > 50 and len(eval_q) > 15 and not train_q & eval_q
  assert mat.split_sizes["eval"] + mat.metadata["eval_dropped_duplicates"] == 20


def test_unknown_kind(tmp_path):
  with pytest.raises(ValueError, match="unknown kind"):
    builders.materialize("x", "csv", [], {}, data_dir=str(tmp_path))
