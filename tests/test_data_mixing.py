"""CPT streams are well-mixed samples of the corpus whatever the document lengths (documents cut
into bounded pieces when the source is built, pieces shuffled globally), resume exactly with
pieces and with CPT replay in SFT, and a user corpus is set up from the command line alone."""

import collections
import json
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from train_utils import REPO

from ifp_jax.data import builders, pipeline
from ifp_jax.data.pipeline import build_iterator, source_config
from ifp_jax.data.tokenization import ByteTokenizer
from ifp_jax.train import heldout

TOK = ByteTokenizer()


def _cli_config(monkeypatch, *overrides: str):
  """configs/tiny.py with `--config.*` overrides, parsed as launch/train.py parses them
  (config_flags reads the override names from sys.argv when the flag is defined)."""
  argv = ["train", *[f"--config.{o}" for o in overrides]]
  monkeypatch.setattr(sys, "argv", argv)
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", str(REPO / "configs" / "tiny.py"), "", flag_values=fv)
  fv(argv)
  return fv.config


def _rows_per_doc(cfg, batches: int) -> tuple[collections.Counter, int]:
  it = build_iterator(
    cfg.data, TOK, kind="cpt", seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size
  )
  rows = collections.Counter()
  for _ in range(batches):
    next(it)
    rows.update(it._window[-1].tolist())  # doc id of each row's first token
  assert it.take_window()["data_doc_rows"] == batches * cfg.train.batch_size
  return rows, batches * cfg.train.batch_size


def _byte_shares(cfg) -> dict[int, float]:
  """Share of the train split's characters per document id (as the stream counts them)."""
  src = cfg.data.cpt.sources.stdlib
  options = dict(src.options, piece_chars=pipeline.PIECE_ROWS * cfg.train.seq_len)
  mat = builders.materialize(
    "stdlib", src.kind, src.paths, options, data_dir=cfg.data.data_dir or None
  )
  size = collections.Counter()
  for r in mat.data_source("train"):
    size[pipeline._doc_id(r)] += len(r["text"])
  total = sum(size.values())
  return {d: n / total for d, n in size.items()}


def _assert_within_share(rows: collections.Counter, n: int, shares: dict[int, float], rpp: int):
  """No document supplies more than 3x its byte share of rows. Rows come a piece (<= `rpp` + 1
  rows) at a time, so a document expected to supply less than 4 pieces' rows may also supply
  two more pieces than 3x its share (piece-count noise, not a long run of one document)."""
  for doc, got in rows.items():
    expected = shares[doc] * n
    slack = 0 if expected >= 4 * rpp else 2 * (rpp + 1)
    assert got <= 3 * expected + slack, (doc, got, expected)
  big = [d for d in shares if shares[d] * n >= 4 * rpp]
  assert big and max(rows[d] / (shares[d] * n) for d in big) <= 3


def test_tiny_cpt_stream_draws_from_many_files(tmp_path, monkeypatch):
  cfg = _cli_config(monkeypatch, f"data.data_dir={tmp_path}")
  rows, n = _rows_per_doc(cfg, 200)
  assert len(rows) >= 100, f"200 batches drew rows from only {len(rows)} files"
  _assert_within_share(rows, n, _byte_shares(cfg), pipeline.PIECE_ROWS)


def test_corpus_of_few_large_files_from_the_command_line(tmp_path, monkeypatch):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  rng = np.random.default_rng(0)
  for name, lines in [("big", 6000), ("mid", 3000), ("small", 1500), ("tiny", 800)]:
    words = [f"{name}{int(w)}" for w in rng.integers(0, 50, size=lines * 6)]
    text = "\n".join(" ".join(words[i * 6 : (i + 1) * 6]) for i in range(lines))
    (corpus / f"{name}.txt").write_text(text + "\n")
  cfg = _cli_config(
    monkeypatch,
    f"data.data_dir={tmp_path / 'tfds'}",
    f"data.cpt.sources.stdlib.paths={corpus}",
    "data.cpt.sources.stdlib.options.extensions='.txt,.md'",
    "data.cpt.sources.stdlib.options.eval_fraction=0.0",
  )
  assert cfg.data.cpt.sources.stdlib.paths == (str(corpus),)
  shares = _byte_shares(cfg)
  assert len(shares) == 4
  it = build_iterator(cfg.data, TOK, kind="cpt", seq_len=128, batch_size=16)
  for _window in range(10):  # every 20-batch window is a sample of all four files
    rows = collections.Counter()
    for _ in range(20):
      next(it)
      rows.update(it._window[-1].tolist())
    it.take_window()
    assert set(rows) == set(shares), rows
    for doc, got in rows.items():
      assert got <= 3 * shares[doc] * 320 and got >= shares[doc] * 320 / 3, (got, shares[doc])


def test_split_pieces_cover_the_text_and_are_bounded():
  text = "".join(f"line {i} " + "x" * (i % 23) + "\n" for i in range(300)) + "y" * 250
  pieces = builders.split_pieces(text, 100)
  assert "".join(pieces) == text
  assert all(0 < len(p) <= 100 for p in pieces) and len(pieces) > 10
  assert all(p.endswith("\n") for p in pieces[:-4])  # at line breaks where there are any
  assert builders.split_pieces(text, 0) == [text] == builders.split_pieces(text, len(text))


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
  d = tmp_path_factory.mktemp("mix")
  texts = [
    f"doc {i} " + "\n".join("abcdefg"[i % 7] * (3 + j % 11) for j in range(9 * i + 5))
    for i in range(12)
  ]
  (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
  pairs = [(f"Question {i}?", f"answer {i}") for i in range(30)]
  (d / "sft.jsonl").write_text(
    "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs)
  )
  return d


def _data_cfg(d, **overrides):
  cfg = pipeline.default_data_config()
  cfg.data_dir = str(d / "tfds")
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def test_pieces_keep_the_tokens_and_end_documents_once(docs):
  """One epoch of a split source holds the same tokens as of whole documents, and EOS only
  after each document's last piece (12 documents: 12 EOS, one maybe in the dropped tail)."""
  counts = []
  for piece_chars in (0, 37):
    cfg = _data_cfg(docs)
    cfg.cpt.sources = {
      "d": source_config("text", [str(docs / "docs.jsonl")], piece_chars=piece_chars)
    }
    it = build_iterator(cfg, TOK, kind="cpt", seq_len=32, batch_size=1, num_epochs=1)
    stream = np.concatenate([b["input_ids"][0] for b in it])
    pieces = it.stats["records"]["d"]["train"]
    assert pieces == 12 if piece_chars == 0 else pieces > 24
    assert 11 <= int((stream == TOK.eos_id).sum()) <= 12
    counts.append(collections.Counter(stream.tolist()))
  assert sum(((counts[0] - counts[1]) + (counts[1] - counts[0])).values()) <= 2 * 32


def _assert_resumes(cfg, kind, **kw):
  it = build_iterator(cfg, TOK, kind=kind, seed=3, **kw)
  for _ in range(9):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(30)]
  fresh = build_iterator(cfg, TOK, kind=kind, seed=3, **kw)
  fresh.set_state(state)
  for a, b in zip(expected, [next(fresh) for _ in range(30)], strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  return expected


def test_split_document_source_resumes_exactly(docs):
  cfg = _data_cfg(docs, shuffle_window=8)
  cfg.cpt.sources = {"d": source_config("text", [str(docs / "docs.jsonl")], piece_chars=29)}
  _assert_resumes(cfg, "cpt", seq_len=16, batch_size=3)


def test_replay_mixes_cpt_rows_into_sft_and_resumes_exactly(docs):
  cfg = _data_cfg(docs, shuffle_window=8, max_prompt_len=12)
  cfg.sft.sources = {
    "qa": source_config("jsonl_sft", [str(docs / "sft.jsonl")], weight=3),
    "replay": source_config("text", [str(docs / "docs.jsonl")], weight=1, piece_chars=29),
  }
  batches = _assert_resumes(cfg, "sft", seq_len=32, batch_size=4)
  # P = max(max_prompt_len, seq_len / 2); C = sft_pack: CPT rows fill one input, SFT rows pack
  assert batches[0]["predictor_ids"].shape == (4, cfg.sft_pack, 16)
  assert cfg.sft_pack == 4
  it = build_iterator(cfg, TOK, kind="sft", seq_len=32, batch_size=4)
  for _ in range(25):
    next(it)
  share = it.stats["per_source"]["replay"] / it.stats["examples"]
  assert 0.15 < share < 0.35, it.stats["per_source"]
  assert it.take_window()["data_doc_rows"] == it.stats["per_source"]["replay"]
  bad = _data_cfg(docs, num_chunks=4)
  bad.sft.sources = {"replay": source_config("text", [str(docs / "docs.jsonl")])}
  with pytest.raises(ValueError, match="num_chunks == 2"):
    build_iterator(bad, TOK, kind="sft", seq_len=32, batch_size=4)


def test_held_out_sample_is_fixed_and_bounded(docs):
  cfg = _data_cfg(docs)
  cfg.cpt.sources = {
    "d": source_config("text", [str(docs / "docs.jsonl")], eval_fraction=0.5, piece_chars=29)
  }
  kw = dict(kind="cpt", seq_len=16, batch_size=4, seed=0)
  a = heldout.held_out_sample(cfg, TOK, rows=10, **kw)
  b = heldout.held_out_sample(cfg, TOK, rows=10, **kw)
  assert len(a) == 3 and a[-1]["loss_weights"][2:].sum() == 0 < a[-1]["loss_weights"][:2].sum()
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
  full = heldout.held_out_sample(cfg, TOK, rows=10**6, **kw)  # all of a small split
  assert 3 < len(full) < 10**5
  out = heldout.held_out_loss(a, lambda batch: {"ce": 2.0, "tokens": batch["loss_weights"].sum()})
  assert out == {"loss": 2.0, "tokens": float(sum(x["loss_weights"].sum() for x in a)), "rows": 10}
  with pytest.raises(ValueError, match="no records in split 'eval'"):
    cfg.cpt.sources.d.options.eval_fraction = 0.0
    heldout.held_out_sample(cfg, TOK, rows=10, **kw)


def test_a_task_source_feeds_its_task_sentence_to_every_predictor_input(docs):
  """Per-task CPT (text option `task`): the predictor reads the source's task sentence, not the
  chunk; the LLM side of the row (tokens, targets, loss, routing) is the plain source's."""
  rows = {}
  for task in ("", "Continue the file."):
    cfg = _data_cfg(docs, num_chunks=4)
    opts = {"task": task} if task else {}
    cfg.cpt.sources = {"d": source_config("text", [str(docs / "docs.jsonl")], **opts)}
    rows[task] = next(build_iterator(cfg, TOK, kind="cpt", seq_len=32, batch_size=2, seed=1))
  plain, task = rows[""], rows["Continue the file."]
  for key in ("input_ids", "targets", "loss_weights", "mask_index", "segment_ids"):
    np.testing.assert_array_equal(plain[key], task[key])
  want = TOK.encode("Continue the file.")[:8]  # P = 32 / 4
  assert task["predictor_ids"].shape == plain["predictor_ids"].shape == (2, 3, 8)
  assert (task["predictor_ids"] == np.asarray(want, np.int32)).all()
  assert (task["predictor_lengths"] == 8).all()
  short = pipeline.task_inputs(plain_row(plain), TOK.encode("ab"), TOK.pad_id)
  assert short["predictor_lengths"].tolist() == [2, 2, 2]
  assert short["predictor_ids"][:, 2:].tolist() == [[TOK.pad_id] * 6] * 3


def plain_row(batch):
  return {k: np.asarray(v)[0] for k, v in batch.items()}


def test_task_is_refused_on_an_sft_source(docs):
  cfg = _data_cfg(docs)
  cfg.sft.sources = {"q": source_config("jsonl_sft", [str(docs / "sft.jsonl")], task="x")}
  with pytest.raises(ValueError, match="source 'q': option task is for 'text' sources"):
    build_iterator(cfg, TOK, kind="sft", seq_len=32, batch_size=2)
