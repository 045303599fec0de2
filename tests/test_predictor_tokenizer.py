"""A predictor with its own backbone and tokenizer (issue 14, item 4).

Data: with its own tokenizer the predictor reads SFT prompts (packed: one per segment) and the
text of CPT chunks re-encoded with it; the shared tokenizer gives the batches of before, byte
for byte. A run whose byte-level LLM has a predictor from a tiny random HF Llama of SmolLM2's
vocabulary (with SmolLM2's tokenizer) trains, resumes with the same losses, refuses a resume
with another predictor tokenizer, loads from its WORKDIR alone and exports a torch predictor
that picks JAX's units.
"""

from __future__ import annotations

import hashlib
import json
import sys

import jax
import numpy as np
import pytest
import train_utils as tu

from ifp_jax.data.pipeline import build_iterator, default_data_config, source_config
from ifp_jax.data.tokenization import ByteTokenizer, load_tokenizer
from ifp_jax.train import predictor_source
from ifp_jax.train.trainer import resolve_models

TOK = ByteTokenizer()
T = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  d = tmp_path_factory.mktemp("data")
  docs = [f"document {i}: " + "abcdefghij"[i % 10] * (5 + 7 * i) + " é€" for i in range(30)]
  (d / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
  pairs = [(f"Question number {i}? " + "x" * (i % 9), f"answer {i}") for i in range(40)]
  (d / "sft.jsonl").write_text(
    "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in pairs)
  )
  return {"dir": d, "docs": docs, "prompts": {p for p, _ in pairs}}


@pytest.fixture(scope="module")
def bpe(data, tmp_path_factory):
  """A small byte-level BPE (a real tokenizer other than the LLM's), trained in a second."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  folder = tmp_path_factory.mktemp("bpe")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(data["docs"] + sorted(data["prompts"]), trainer)
  tok.save(str(folder / "tokenizer.json"))
  return load_tokenizer(f"hf:{folder}")


def _data_cfg(data, **overrides):
  cfg = default_data_config()
  cfg.data_dir = str(data["dir"] / "tfds")
  cfg.max_prompt_len = 12
  cfg.cpt.sources = {"docs": source_config("text", [str(data["dir"] / "docs.jsonl")])}
  cfg.sft.sources = {
    "qa": source_config("jsonl_sft", [str(data["dir"] / "sft.jsonl")]),
    "replay": source_config("text", [str(data["dir"] / "docs.jsonl")], weight=0.5),
  }
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def _digest(it, n=5) -> str:
  h = hashlib.sha256()
  for _ in range(n):
    b = next(it)
    for k in sorted(b):
      h.update(k.encode())
      h.update(np.ascontiguousarray(b[k]).tobytes())
  return h.hexdigest()[:16]


# Batch digests of this pipeline before predictors could have their own tokenizer (measured on
# the commit before it): the shared tokenizer must keep producing exactly these bytes.
BEFORE = {"cpt": "66596e17c35d0f17", "sft": "aa63c7e0b3d6bb0e"}


@pytest.mark.parametrize("stage", ["cpt", "sft"])
def test_shared_tokenizer_batches_are_unchanged(data, stage):
  for shared in (None, TOK):
    it = build_iterator(
      _data_cfg(data), TOK, kind=stage, seq_len=T, batch_size=4, seed=1, predictor_tokenizer=shared
    )
    assert _digest(it) == BEFORE[stage], f"predictor_tokenizer={shared!r}"


def test_own_tokenizer_reads_sft_prompts_and_chunk_text(data, bpe):
  """Packed SFT with CPT replay: each segment's predictor input is its prompt in the BPE, each
  replayed CPT row's is its first chunk's text re-encoded; P = max_prompt_len, BPE padding."""
  P = 16
  it = build_iterator(
    _data_cfg(data, max_prompt_len=P),
    TOK,
    kind="sft",
    seq_len=T,
    batch_size=4,
    seed=1,
    predictor_tokenizer=bpe,
  )
  seen = {"prompt": 0, "chunk": 0}
  for _ in range(6):
    b = next(it)
    assert b["predictor_ids"].shape[2] == P
    for r in range(4):
      for i in range(b["predictor_ids"].shape[1]):
        n = int(b["predictor_lengths"][r, i])
        ids = b["predictor_ids"][r, i]
        assert (ids[n:] == bpe.pad_id).all()
        if not (b["segment_ids"][r] == i + 1).any():  # an unused slot: one pad token
          assert n == 1 and ids[0] == bpe.pad_id
          continue
        text = bpe.decode(ids[:n].tolist())
        if text in data["prompts"]:
          assert ids[:n].tolist() == bpe.encode(text)
          seen["prompt"] += 1
        else:  # a replayed CPT row: the predictor reads the text of chunk 0 (targets[:T/2])
          assert i == 0 and text == TOK.decode(b["targets"][r, : T // 2].tolist()), text
          seen["chunk"] += 1
  assert seen["prompt"] > 10 and seen["chunk"] > 0, seen


def test_own_tokenizer_cpt_chunks_are_cut_and_counted(data, bpe):
  it = build_iterator(
    _data_cfg(data, max_prompt_len=4, num_chunks=4),
    TOK,
    kind="cpt",
    seq_len=T,
    batch_size=4,
    seed=1,
    predictor_tokenizer=bpe,
  )
  b = next(it)
  assert b["predictor_ids"].shape == (4, 3, 4)  # C = num_chunks - 1, P = max_prompt_len
  for r in range(4):
    for c in range(3):
      chunk = TOK.decode(b["targets"][r, c * 8 : (c + 1) * 8].tolist())
      want = bpe.encode(chunk)[:4]
      np.testing.assert_array_equal(b["predictor_ids"][r, c, : len(want)], want)
      assert b["predictor_lengths"][r, c] == len(want)
  assert it.stats["prompt_truncated"] > 0


def test_bad_predictor_combinations_are_named(tmp_path):
  config = tu.small_config(str(tmp_path), model__mask_kind="static")
  config.model.predictor_init_from = "smollm2"
  with pytest.raises(ValueError, match=r"model.predictor_init_from='smollm2' needs a predictor"):
    resolve_models(config, TOK)
  config = tu.small_config(str(tmp_path), model__predictor_init_layers=1)
  config.data.predictor_tokenizer = "smollm2"
  with pytest.raises(ValueError, match=r"data.predictor_tokenizer='smollm2' differs"):
    resolve_models(config, TOK)
  config = tu.small_config(str(tmp_path), model__predictor_init_from=str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="model.predictor_init_from="):
    predictor_source.tokenizer_spec(config)


# --- a run with a predictor of another vocabulary ---------------------------------------------


@pytest.fixture(scope="module")
def predictor_model(tmp_path_factory):
  """A random 2-layer HF Llama of SmolLM2's vocabulary, with SmolLM2's tokenizer files."""
  import torch
  import transformers

  from ifp_jax.io.export import hf_tokenizer

  folder = tmp_path_factory.mktemp("smol_vocab_llama")
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.1,
  )
  transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
  hf_tokenizer.write_tokenizer_files("smollm2", folder, 256)
  return folder


def _run_config(data_dir, predictor_model, **overrides):
  # SFT only: its packed prompts and its CPT replay rows (chunk text) both reach the predictor.
  fields = {
    "mesh": (1, 1, 1),
    "cpt__steps": 0,
    "sft__steps": 3,
    "data__max_prompt_len": 24,
    "model__predictor_init_from": f"hf:{predictor_model}",
    "model__predictor_init_layers": 1,
  }
  return tu.small_config(data_dir, **{**fields, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tu.shared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(predictor_model, data_dir, tmp_path_factory):
  """(uninterrupted WORKDIR, WORKDIR stopped after 2 steps and resumed)."""
  from ifp_jax.train.trainer import Trainer

  config = _run_config(data_dir, predictor_model)
  devices = jax.devices()[:1]
  ref = tmp_path_factory.mktemp("own_tok_ref")
  Trainer(config, ref, devices=devices).run()
  resumed = tmp_path_factory.mktemp("own_tok_resumed")
  Trainer(config, resumed, devices=devices).run(max_steps=2)
  Trainer(config, resumed, devices=devices).run()
  return ref, resumed


@pytest.mark.slow
def test_trains_and_resumes_with_the_same_losses(runs):
  ref, resumed = (tu.read_metrics(w) for w in runs)
  assert sorted(ref) == sorted(resumed) == [1, 2, 3]
  for step in (1, 2, 3):
    for key in ("loss", "grad_norm", "mask_kept_mean"):
      assert resumed[step][key] == ref[step][key], (step, key)


@pytest.mark.slow
def test_workdir_alone_gives_the_predictor_and_its_tokenizer(runs, predictor_model):
  from ifp_jax.infer import instruction_masks as im
  from ifp_jax.infer.pruned import PrunedRunner
  from ifp_jax.infer.run_loader import load_run

  run = load_run(runs[1])
  assert run.meta["predictor_tokenizer"] == f"hf:{predictor_model.absolute()}"
  assert run.tokenizer.vocab_size == 260 and run.predictor_tokenizer.vocab_size == 49152
  assert (run.ifp.predictor.vocab_size, run.ifp.predictor.hidden_size) == (49152, 64)
  assert run.ifp.llm.vocab_size == 384
  texts = ["Reverse the word.\nhello", "Add the two numbers.\n12 34"]
  want = im.kept_units(run.ifp, run.params, run.predictor_tokenizer, texts, 24)
  np.testing.assert_array_equal(PrunedRunner(run, "per_input").kept(texts), want)


@pytest.mark.slow
def test_resume_with_another_predictor_tokenizer_is_refused(runs, predictor_model, data_dir):
  from ifp_jax.train.resume_check import ConfigMismatchError
  from ifp_jax.train.trainer import Trainer

  config = _run_config(data_dir, predictor_model)
  config.data.predictor_tokenizer = "bytes"
  trainer = Trainer(config, runs[1], devices=jax.devices()[:1])
  with pytest.raises(ConfigMismatchError, match=r"data\.predictor_tokenizer: '' -> 'bytes'"):
    trainer.init_or_restore()


@pytest.mark.slow
def test_predictor_init_layers_beyond_the_model_is_named(predictor_model, tmp_path):
  config = _run_config(str(tmp_path), predictor_model, model__predictor_init_layers=3)
  with pytest.raises(ValueError, match=r"model.predictor_init_layers=3 exceeds the 2 layers"):
    resolve_models(config, TOK)


@pytest.mark.slow
def test_exported_torch_predictor_uses_its_tokenizer_and_picks_jax_units(runs, tmp_path):
  from ifp_jax.infer.instruction_masks import kept_units, task_instruction
  from ifp_jax.io import export

  src = export.from_run(runs[1])
  out = export.export_predictor(src, tmp_path / "pred")
  tok = json.loads((out / "tokenizer.json").read_text())
  assert len(tok["model"]["vocab"]) > 40000  # SmolLM2's BPE, not the LLM's bytes
  sys.path.insert(0, str(out))
  try:
    import ifp_predictor
  finally:
    sys.path.pop(0)
  pred = ifp_predictor.IFPPredictor.from_pretrained(str(out))
  texts = [task_instruction(n) for n in ("add", "reverse", "code", "mmlu")] + [
    "Reverse the word.\nhello",
    "What is the capital of France?",
  ]
  want = kept_units(src.ifp, src.params, src.predictor_tokenizer, texts, src.max_prompt_len)
  np.testing.assert_array_equal(pred.kept_units(texts).numpy(), want)
  assert len({w.tobytes() for w in want}) > 1  # the units depend on the instruction
