"""Tokenizers: round trips, special tokens, ChatML, factory specs (bytes / hf / spm / smollm2)."""

import json

import pytest

from ifp_jax.data import tokenization
from ifp_jax.data.tokenization import IM_END, IM_START, load_tokenizer

TEXTS = [
  "def f(x):\n    return x * 2  # doubled\n",
  "Hello, wörld! Ünïcödé and emoji 🙂 mixed with code: [1, 2, 3][0]",
  "The quick brown fox jumps over the lazy dog. " * 3,
  "Sort the letters of the word alphabetically.\nbanana",
]
MESSAGES = [
  {"role": "user", "content": "Reverse the word.\nabc"},
  {"role": "assistant", "content": "cba"},
]


def test_bytes_round_trip_and_specials():
  tok = load_tokenizer("bytes")
  assert tok.vocab_size == 260
  assert len({tok.pad_id, tok.eos_id, tok.token_to_id(IM_START), tok.token_to_id(IM_END)}) == 4
  for text in TEXTS:
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
  ids = tok.encode(f"{IM_START}user\nhi{IM_END}")
  assert ids[0] == tok.token_to_id(IM_START) and ids[-1] == tok.im_end_id
  assert ids[1:-1] == list(b"user\nhi")
  assert tok.decode(ids) == f"{IM_START}user\nhi{IM_END}"
  assert set(tok.stop_ids) == {tok.eos_id, tok.im_end_id}


def test_chatml_template_and_segments():
  tok = load_tokenizer("bytes")
  text = tok.apply_chat_template(MESSAGES)
  assert text == (
    "<|im_start|>user\nReverse the word.\nabc<|im_end|>\n<|im_start|>assistant\ncba<|im_end|>\n"
  )
  gen = tok.apply_chat_template(MESSAGES[:1], add_generation_prompt=True)
  assert gen.endswith("<|im_end|>\n<|im_start|>assistant\n")
  segments = tok.chat_segments(MESSAGES)
  assert "".join(t for t, _ in segments) == text
  assert [t for t, out in segments if out] == ["cba<|im_end|>"]


def test_default_system_from_template():
  template = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe brief.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}"
  )
  assert tokenization.default_system_from_template(template) == "Be brief."
  assert tokenization.default_system_from_template("{{ nonsense") is None
  assert tokenization.default_system_from_template(None) is None


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<|endoftext|>", IM_START, IM_END, "<pad>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(TEXTS * 20, trainer)
  d = tmp_path_factory.mktemp("hf_tok")
  tok.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(
    json.dumps({"eos_token": IM_END, "pad_token": {"content": "<pad>"}})
  )
  return d


@pytest.mark.slow
def test_hf_tokenizer_json(hf_dir):
  tok = load_tokenizer(f"hf:{hf_dir}")
  assert tok.vocab_size <= 400
  assert tok.eos_id == tok.token_to_id("<|endoftext|>") == 0  # document end preferred
  assert tok.pad_id == tok.token_to_id("<pad>")
  for text in TEXTS:
    assert tok.decode(tok.encode(text)) == text
  chat = tok.apply_chat_template(MESSAGES)
  ids = tok.encode(chat)
  assert ids.count(tok.token_to_id(IM_START)) == 2 and ids.count(tok.im_end_id) == 2
  assert tok.decode(ids) == chat
  assert load_tokenizer(f"hf:{hf_dir / 'tokenizer.json'}").vocab_size == tok.vocab_size


def test_sentencepiece_model(tmp_path):
  import sentencepiece as spm

  prefix = tmp_path / "spm"
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(TEXTS * 20),
    model_prefix=str(prefix),
    vocab_size=400,
    model_type="bpe",
    user_defined_symbols=[IM_START, IM_END],
    pad_id=3,
    byte_fallback=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  tok = load_tokenizer(f"spm:{prefix}.model")
  assert tok.pad_id == 3 and tok.eos_id == 2 and tok.bos_id == 1
  for text in ["Hello, wörld! 🙂 code: [1, 2, 3][0]", "Sort the letters.\nbanana"]:
    assert tok.decode(tok.encode(text)) == text
  ids = tok.encode(f"{IM_START}user\nhi{IM_END}")
  assert tok.token_to_id(IM_START) in ids and ids[-1] == tok.im_end_id
  assert tok.token_to_id("<|not-a-piece|>") is None


def test_bad_specs():
  for spec in ["nope", "hf:", "spm:", "gguf:"]:
    with pytest.raises(ValueError, match="spec"):
      load_tokenizer(spec)
  with pytest.raises(FileNotFoundError):
    load_tokenizer("hf:/nonexistent/dir")


def test_smollm2_tokenizer():
  gguf_io = pytest.importorskip("ifp_jax.io.gguf")
  if not hasattr(gguf_io, "tokenizer_from_gguf"):
    pytest.skip("gguf_io.tokenizer_from_gguf not available yet")
  try:
    gguf_io.find_smollm2_gguf()
  except Exception as e:  # noqa: BLE001
    pytest.skip(f"SmolLM2 GGUF not installed: {e}")
  tok = load_tokenizer("smollm2")
  assert tok.vocab_size == 49152
  assert (tok.token_to_id("<|endoftext|>"), tok.token_to_id(IM_START), tok.im_end_id) == (0, 1, 2)
  assert tok.eos_id == 0
  for text in TEXTS:
    assert tok.decode(tok.encode(text)) == text
  chat = tok.apply_chat_template(MESSAGES[:1], add_generation_prompt=True)
  assert chat.endswith(
    "<|im_start|>user\nReverse the word.\nabc<|im_end|>\n<|im_start|>assistant\n"
  )
