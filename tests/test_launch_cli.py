"""launch.convert and launch.generate as subprocesses on a tiny random HF Llama + byte tokenizer."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer() -> Tokenizer:
  """Byte-level BPE without merges: 256 byte tokens + 3 specials (vocab 259)."""
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  vocab = {c: i for i, c in enumerate(sorted(alphabet))}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
  return tok


def run(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def logits(model, ids) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp("tiny_hf")
  tok = byte_tokenizer()
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=tok.get_vocab_size(),
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
    initializer_range=0.2,
    bos_token_id=None,
    eos_token_id=tok.token_to_id("<|im_end|>"),
    pad_token_id=None,
  )
  transformers.LlamaForCausalLM(cfg).eval().save_pretrained(folder)
  tok.save(str(folder / "tokenizer.json"))
  return folder


IDS = [[3, 70, 200, 11, 5, 258, 42, 42, 9]]


def test_convert_round_trip_loads_in_transformers(tiny_dir, tmp_path):
  out = tmp_path / "converted"
  res = run("launch.convert", f"--source=hf:{tiny_dir}", f"--out={out}")
  assert res.returncode == 0, res.stderr
  assert "wrote" in res.stdout
  assert (out / "tokenizer.json").read_text() == (tiny_dir / "tokenizer.json").read_text()
  src = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="float32")
  dst = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
  assert dst.config.eos_token_id == src.config.eos_token_id
  np.testing.assert_array_equal(logits(dst, IDS), logits(src, IDS))

  # A non-empty --out is refused with a clear message and left untouched.
  before = (out / "model.safetensors").stat().st_mtime_ns
  res = run("launch.convert", f"--source=hf:{tiny_dir}", f"--out={out}")
  assert res.returncode != 0 and "not empty; pass --overwrite" in res.stderr
  assert (out / "model.safetensors").stat().st_mtime_ns == before

  # --overwrite replaces it (here with bfloat16 weights).
  res = run(
    "launch.convert", f"--source=hf:{tiny_dir}", f"--out={out}", "--overwrite", "--dtype=bfloat16"
  )
  assert res.returncode == 0, res.stderr
  bf16 = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32")
  diff = np.abs(logits(bf16, IDS) - logits(src, IDS)).max()
  assert 0 < diff < 0.1


def test_convert_rejects_bad_source(tmp_path):
  res = run("launch.convert", f"--source=hf:{tmp_path / 'nothing'}", f"--out={tmp_path / 'o'}")
  assert res.returncode != 0 and "config.json not found" in res.stderr


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_generate_refuses_a_bad_temperature_before_loading(tmp_path, value):
  """Issue 17 case 12: --temperature=nan printed NUL bytes; now one line and exit 1."""
  res = run(
    "launch.generate", f"--model=hf:{tmp_path / 'x'}", "--prompt=hi", f"--temperature={value}"
  )
  assert res.returncode == 1 and res.stdout == ""
  assert f"--temperature={float(value)} must be a finite number >= 0" in res.stderr


def test_train_refuses_a_negative_max_steps(tmp_path):
  """Issue 17 case 12: a negative --max_steps was a no-op; now a usage error, nothing written."""
  res = run("launch.train", f"--workdir={tmp_path / 'run'}", "--max_steps=-1")
  assert res.returncode == 1 and "--max_steps=-1 must be >= 0" in res.stderr
  assert not (tmp_path / "run").exists()


def test_generate_prints_transformers_greedy_text(tiny_dir):
  prompt = "Hello, world"
  res = run("launch.generate", f"--model={tiny_dir}", f"--prompt={prompt}", "--max_new_tokens=10")
  assert res.returncode == 0, res.stderr
  tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
  ids = tok.encode(prompt).ids
  model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="float32")
  stops = [tok.token_to_id(s) for s in ("<|endoftext|>", "<|im_end|>")]
  with torch.no_grad():
    ref = model.generate(
      torch.tensor([ids]), max_new_tokens=10, do_sample=False, eos_token_id=stops, pad_token_id=0
    )[0, len(ids) :].tolist()
  want = tok.decode(ref, skip_special_tokens=True)
  assert want.strip()
  assert res.stdout == want + "\n"
