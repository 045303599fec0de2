"""build_iterator end to end (byte tokenizer): CPT chunk routing, SFT loss masks, truncation
counts, exact resume, disjoint hosts, mixture weights, finite eval iterators."""

import inspect
import itertools
import json
import re

import numpy as np
import pytest

from ifp_jax.data import pipeline
from ifp_jax.data.batch import FIELD_NAMES
from ifp_jax.data.pipeline import build_iterator, default_data_config, source_config
from ifp_jax.data.tokenization import ByteTokenizer

TOK = ByteTokenizer()
KEYS = set(FIELD_NAMES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  docs = [f"document {i}: " + "abcdefghij"[i % 10] * (5 + 7 * i) for i in range(30)]
  (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
  pairs = [(f"Question number {i}?", f"answer {i}") for i in range(40)]
  (d / "sft.jsonl").write_text(
    "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs)
  )
  (d / "other.jsonl").write_text(
    "".join(json.dumps({"prompt": f"Other {i}", "response": "o"}) + "\n" for i in range(40))
  )
  return {"dir": d, "docs": docs, "pairs": dict(pairs)}


def _cfg(data, stage, sources, **overrides):
  cfg = default_data_config()
  cfg.data_dir = str(data["dir"] / "tfds")
  cfg[stage].sources = sources
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize("num_chunks", [2, 4])
def test_cpt_chunk_routing(data, num_chunks):
  T, B = 32, 3
  cfg = _cfg(
    data,
    "cpt",
    {"docs": source_config("text", [str(data["dir"] / "docs.jsonl")])},
    num_chunks=num_chunks,
    shuffle=False,
  )
  batches = _take(build_iterator(cfg, TOK, kind="cpt", seq_len=T, batch_size=B), 6)
  P, C = T // num_chunks, num_chunks - 1
  rows = []
  for b in batches:
    assert set(b) == KEYS
    assert b["input_ids"].shape == (B, T) and b["input_ids"].dtype == np.int32
    assert b["predictor_ids"].shape == (B, C, P) and b["predictor_lengths"].shape == (B, C)
    assert b["loss_weights"].dtype == np.float32
    for r in range(B):
      inp, tgt, lw = b["input_ids"][r], b["targets"][r], b["loss_weights"][r]
      assert np.all(lw[:P] == 0) and np.all(lw[P:] == 1)  # no loss on the first chunk
      for c in range(C):
        np.testing.assert_array_equal(b["predictor_ids"][r, c], tgt[c * P : (c + 1) * P])
      np.testing.assert_array_equal(b["predictor_lengths"][r], P)
      expected = np.maximum(np.arange(T) // P - 1, 0)
      np.testing.assert_array_equal(b["mask_index"][r], expected)
      assert b["mask_index"][r].max() < C
      # No leak: the mask used at a loss position t comes from target tokens at row index
      # <= (c+1)*P <= t, i.e. already read by the LLM at input position t.
      for t in np.nonzero(lw)[0]:
        assert (b["mask_index"][r, t] + 1) * P <= t
      np.testing.assert_array_equal(inp[1:], tgt[:-1])
      rows.append((inp, tgt))
  # Rows tile one stream with stride T; docs are joined by EOS.
  for (_, tgt_a), (inp_b, _) in itertools.pairwise(rows):
    assert tgt_a[-1] == inp_b[0]
  stream = np.concatenate([rows[0][0]] + [tgt for _, tgt in rows])
  pieces = TOK.decode(stream).split("<|endoftext|>")
  assert all(p in data["docs"] for p in pieces[1:-1]) and len(pieces) > 3


def test_sft_loss_mask_is_exactly_the_response(data):
  T = 96
  qa = {"qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")])}
  cfg = _cfg(data, "sft", qa, sft_pack=1)  # one conversation per row (packing: below)
  it = build_iterator(cfg, TOK, kind="sft", seq_len=T, batch_size=4)
  for b in _take(it, 5):
    assert b["predictor_ids"].shape == (4, 1, cfg.max_prompt_len)
    assert np.all(b["mask_index"] == 0)
    for r in range(4):
      n = int(b["predictor_lengths"][r, 0])
      prompt = TOK.decode(b["predictor_ids"][r, 0, :n])
      assert np.all(b["predictor_ids"][r, 0, n:] == TOK.pad_id)
      response = data["pairs"][prompt]
      lw, tgt, inp = b["loss_weights"][r], b["targets"][r], b["input_ids"][r]
      assert TOK.decode(tgt[lw > 0]) == response + "<|im_end|>"
      msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
      full = TOK.encode(TOK.apply_chat_template(msgs))
      n = len(full) - 1
      np.testing.assert_array_equal(inp[:n], full[:-1])
      np.testing.assert_array_equal(tgt[:n], full[1:])
      loss_pos = np.nonzero(lw)[0]  # one contiguous run ending on <|im_end|>
      assert np.all(np.diff(loss_pos) == 1) and tgt[loss_pos[-1]] == TOK.im_end_id
      assert np.all(lw[n:] == 0) and np.all(inp[n:] == TOK.pad_id) and np.all(tgt[n:] == TOK.pad_id)
  assert it.stats["truncated"] == it.stats["prompt_truncated"] == it.stats["no_loss"] == 0


def test_sft_multi_turn_and_skills(data, tmp_path):
  f = tmp_path / "chat.jsonl"
  f.write_text(
    json.dumps(
      {
        "messages": [
          {"role": "user", "content": "hi"},
          {"role": "assistant", "content": "A1"},
          {"role": "user", "content": "more"},
          {"role": "assistant", "content": "A2"},
        ]
      }
    )
    + "\n"
  )
  cfg = _cfg(data, "sft", {"chat": source_config("jsonl_sft", [str(f)])})
  b = next(build_iterator(cfg, TOK, kind="sft", seq_len=80, batch_size=1))
  assert TOK.decode(b["targets"][0][b["loss_weights"][0] > 0]) == "A1<|im_end|>A2<|im_end|>"
  assert TOK.decode(b["predictor_ids"][0, 0, : b["predictor_lengths"][0, 0]]) == "hi"
  cfg = _cfg(data, "sft", {"skills": source_config("skills", num_train=200, num_eval=20)})
  b = next(build_iterator(cfg, TOK, kind="sft", seq_len=96, batch_size=8))
  for r in range(8):
    prompt = TOK.decode(b["predictor_ids"][r, 0, : b["predictor_lengths"][r, 0]])
    answer = TOK.decode(b["targets"][r][b["loss_weights"][r] > 0])
    assert "\n" in prompt and answer.endswith("<|im_end|>") and len(answer) > len("<|im_end|>")


def test_truncation_policies_are_counted(data, tmp_path):
  f = tmp_path / "long.jsonl"
  f.write_text(
    "".join(
      json.dumps({"prompt": f"{i} " + "x" * 100, "response": "short"}) + "\n" for i in range(8)
    )
  )
  src = {"long": source_config("jsonl_sft", [str(f)])}
  T = 48
  cfg = _cfg(data, "sft", src, max_prompt_len=16, sft_pack=1)
  it = build_iterator(cfg, TOK, kind="sft", seq_len=T, batch_size=4)
  b = next(it)
  assert it.stats["prompt_truncated"] == 4 and it.stats["truncated"] == 4
  np.testing.assert_array_equal(b["predictor_lengths"], 16)
  for r in range(4):  # left_prompt: the response survives whole, the row is full
    assert TOK.decode(b["targets"][r][b["loss_weights"][r] > 0]) == "short<|im_end|>"
    assert TOK.decode(b["targets"][r]).endswith("short<|im_end|>\n")
    assert np.all(b["input_ids"][r] != TOK.pad_id)
  g = tmp_path / "long_response.jsonl"
  g.write_text(json.dumps({"prompt": "p" * 100, "response": "0123456789" * 10}) + "\n")
  cfg = _cfg(data, "sft", {"lr": source_config("jsonl_sft", [str(g)])})
  b = next(build_iterator(cfg, TOK, kind="sft", seq_len=T, batch_size=1))
  # left_prompt keeps one token before the response so its first token is still a target
  assert b["loss_weights"][0, 0] == 1 and np.all(b["loss_weights"][0] == 1)
  assert TOK.decode(b["targets"][0]) == ("0123456789" * 10)[:T]
  cfg = _cfg(data, "sft", src, max_prompt_len=16, truncate="right")
  it = build_iterator(cfg, TOK, kind="sft", seq_len=T, batch_size=4)
  b = next(it)
  assert np.all(b["loss_weights"] == 0) and it.stats["no_loss"] == 4
  assert it.stats["truncated"] == 4


def test_sft_packing_keeps_each_conversation_whole_in_its_own_segment(data):
  """Packed rows (sft_pack=4) hold, segment by segment and in stream order, exactly the
  unpacked rows' tokens, loss weights and predictor inputs; mask_index names the segment."""
  qa = {"qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")])}
  T, n_rows = 96, 12
  single = _cfg(data, "sft", qa, sft_pack=1, shuffle=False)
  packed = _cfg(data, "sft", qa, sft_pack=4, shuffle=False)
  one = build_iterator(single, TOK, kind="sft", seq_len=T, batch_size=1)
  want = [next(one) for _ in range(4 * n_rows)]
  it = build_iterator(packed, TOK, kind="sft", seq_len=T, batch_size=2)
  got = []  # (segment tokens, targets, weights, prompt, prompt length) in stream order
  for b in _take(it, n_rows // 2):
    assert b["predictor_ids"].shape == (2, 4, packed.max_prompt_len)
    for r in range(2):
      seg = b["segment_ids"][r]
      ids = [i for i in np.unique(seg) if i > 0]
      assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2  # short QA pairs: >= 2
      assert np.all(np.diff(seg[seg > 0]) >= 0) and np.all(seg[int((seg > 0).sum()) :] == 0)
      for i in ids:
        on = seg == i
        assert np.all(b["mask_index"][r][on] == i - 1)
        got.append(
          (
            b["input_ids"][r][on],
            b["targets"][r][on],
            b["loss_weights"][r][on],
            b["predictor_ids"][r, i - 1],
            b["predictor_lengths"][r, i - 1],
          )
        )
      assert np.all(b["predictor_lengths"][r, len(ids) :] == 1)  # unused inputs
      assert not b["loss_weights"][r][seg == 0].any()
  for (ids, tgt, lw, prompt, plen), w in zip(got, want):
    n = int(w["segment_ids"][0].sum())
    np.testing.assert_array_equal(ids, w["input_ids"][0, :n])
    np.testing.assert_array_equal(tgt, w["targets"][0, :n])
    np.testing.assert_array_equal(lw, w["loss_weights"][0, :n])
    np.testing.assert_array_equal(prompt, w["predictor_ids"][0, 0])
    assert plen == w["predictor_lengths"][0, 0]
  # The padding a user pays for: packed rows are mostly real tokens, single ones mostly not.
  frac_packed, frac_single = it.take_window()["data_real_frac"], one.take_window()["data_real_frac"]
  assert frac_packed > 2 * frac_single and frac_packed > 0.6, (frac_packed, frac_single)
  assert it.stats["real_tokens"] == sum(len(g[0]) for g in got)
  # Two sources: rows are packed per source, so each row keeps its source's count.
  other = {"other": source_config("jsonl_sft", [str(data["dir"] / "other.jsonl")])}
  both = build_iterator(
    _cfg(data, "sft", {**qa, **other}, sft_pack=4), TOK, kind="sft", seq_len=T, batch_size=4
  )
  _take(both, 10)
  assert sum(both.stats["per_source"].values()) == both.stats["examples"] == 40
  assert min(both.stats["per_source"].values()) > 0


def _assert_same(batches_a, batches_b):
  for a, b in zip(batches_a, batches_b, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("stage", ["cpt", "sft"])
def test_state_round_trip_gives_identical_batches(data, stage):
  if stage == "cpt":
    sources = {
      "docs": source_config("text", [str(data["dir"] / "docs.jsonl")], weight=2),
      "more": source_config("text", [str(data["dir"] / "sft.jsonl")], text_field="prompt"),
    }
    kw = dict(seq_len=16, batch_size=2)
  else:
    sources = {
      "qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")], weight=3),
      "other": source_config("jsonl_sft", [str(data["dir"] / "other.jsonl")]),
    }
    kw = dict(seq_len=64, batch_size=3)
  cfg = _cfg(data, stage, sources, shuffle_window=8)
  it = build_iterator(cfg, TOK, kind=stage, seed=5, **kw)
  _take(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # JSON-serialisable
  stats = it.stats
  expected = _take(it, 25)  # crosses epochs of the small sources
  fresh = build_iterator(cfg, TOK, kind=stage, seed=5, **kw)
  fresh.set_state(state)
  assert fresh.stats == stats
  _assert_same(_take(fresh, 25), expected)
  # a different seed gives a different order
  first = _take(build_iterator(cfg, TOK, kind=stage, seed=5, **kw), 7)
  other = _take(build_iterator(cfg, TOK, kind=stage, seed=6, **kw), 7)
  assert any(
    not np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, other, strict=True)
  )


def test_two_hosts_read_disjoint_records(data):
  cfg = _cfg(data, "sft", {"qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")])})
  prompts = []
  for host in range(2):
    it = build_iterator(
      cfg,
      TOK,
      kind="sft",
      seq_len=64,
      batch_size=6,
      process_index=host,
      process_count=2,
      num_epochs=1,
    )
    seen = []
    for b in it:
      for r in range(6):
        if b["loss_weights"][r].any():
          seen.append(TOK.decode(b["predictor_ids"][r, 0, : b["predictor_lengths"][r, 0]]))
        else:  # filler rows of the last, partial batch
          assert np.all(b["input_ids"][r] == TOK.pad_id) and b["predictor_lengths"][r, 0] == 1
    assert len(seen) == len(set(seen)) == 20 and it.stats["host_records"]["qa"] == 20
    prompts.append(set(seen))
  assert not prompts[0] & prompts[1]
  assert prompts[0] | prompts[1] == set(data["pairs"])


def test_mixture_follows_weights(data):
  sources = {
    "qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")], weight=3.0),
    "other": source_config("jsonl_sft", [str(data["dir"] / "other.jsonl")], weight=1.0),
    "off": source_config("jsonl_sft", [str(data["dir"] / "other.jsonl")], weight=0.0),
  }
  cfg = _cfg(data, "sft", sources)
  it = build_iterator(cfg, TOK, kind="sft", seq_len=48, batch_size=10)
  counted = {"qa": 0, "other": 0}
  for b in _take(it, 40):
    for r in range(10):
      prompt = TOK.decode(b["predictor_ids"][r, 0, : b["predictor_lengths"][r, 0]])
      counted["qa" if prompt.startswith("Question") else "other"] += 1
  assert counted == it.stats["per_source"]
  assert abs(counted["qa"] / 400 - 0.75) < 0.05


def test_finite_eval_iterator_and_errors(data):
  cfg = _cfg(
    data,
    "cpt",
    {"docs": source_config("text", [str(data["dir"] / "docs.jsonl")], eval_fraction=0.3)},
  )
  it = build_iterator(cfg, TOK, kind="cpt", seq_len=16, batch_size=4, split="eval", num_epochs=1)
  batches = list(itertools.islice(it, 1000))
  assert 0 < len(batches) < 1000
  n_eval = it.stats["records"]["docs"]["eval"]
  assert 0 < n_eval < 30
  with pytest.raises(ValueError, match="kind"):
    build_iterator(cfg, TOK, kind="pretrain", seq_len=16, batch_size=4)
  with pytest.raises(ValueError, match="divide"):
    build_iterator(cfg, TOK, kind="cpt", seq_len=15, batch_size=4)
  bad = _cfg(data, "cpt", {"skills": source_config("skills")})
  with pytest.raises(ValueError, match="has kind 'skills'"):
    build_iterator(bad, TOK, kind="cpt", seq_len=16, batch_size=4)


def test_default_config_is_documented_and_builds(data):
  cfg = default_data_config()
  src = inspect.getsource(pipeline.default_data_config)
  for line in src.splitlines():
    if re.match(r"\s+c\.\w+ = (?!ml_collections)", line):
      assert "#" in line, f"undocumented config field: {line.strip()}"
  assert cfg.cpt.sources.stdlib.kind == "text" and cfg.sft.sources.skills.kind == "skills"
  cfg.data_dir = str(data["dir"] / "tfds")
  cfg.cpt.sources.stdlib.options.max_files = 5
  cfg.lock()
  b = next(build_iterator(cfg, TOK, kind="cpt", seq_len=64, batch_size=2))
  assert b["predictor_ids"].shape == (2, 1, 32)


def test_reasoning_gym_source(data):
  pytest.importorskip("reasoning_gym")
  src = source_config(
    "reasoning_gym",
    tasks=["basic_arithmetic", "chain_sum"],
    size=30,
    eval_size=10,
    seed=1,
    task_kwargs={"chain_sum": {"min_terms": 2, "max_terms": 3}},
  )
  cfg = _cfg(data, "sft", {"rg": src})
  for split in ("train", "eval"):
    it = build_iterator(cfg, TOK, kind="sft", seq_len=128, batch_size=4, split=split)
    b = next(it)
    for r in range(4):
      question = TOK.decode(b["predictor_ids"][r, 0, : b["predictor_lengths"][r, 0]])
      answer = TOK.decode(b["targets"][r][b["loss_weights"][r] > 0])
      assert question and answer.endswith("<|im_end|>") and len(answer) > len("<|im_end|>")
  assert it.stats["records"]["rg"]["train"] == 60
