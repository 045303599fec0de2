"""Batched KV-cache generation: equals transformers' greedy generate, stops at eos, and a
gathered width-k model generates exactly what the hard-masked full model generates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from ifp_jax.infer.generate import (
  GenerateOutput,
  chat_prompt,
  generate,
  pad_prompts,
  stop_ids,
  trim,
)
from ifp_jax.infer.generate import _compiled as compiled_generate
from ifp_jax.io import hf as hf_io
from ifp_jax.model import gather, masking
from ifp_jax.model.config import LlamaConfig

VOCAB = 97
PROMPTS = [[5, 17, 3, 88, 41, 9, 60], [12, 7], [33, 2, 70, 70, 14, 25, 8, 91, 50, 4, 19]]


def tiny_hf(tied: bool, seed: int = 0):
  torch.manual_seed(seed)
  hf_cfg = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_theta=1000.0,
    max_position_embeddings=256,
    tie_word_embeddings=tied,
    initializer_range=0.2,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
  )
  return transformers.LlamaForCausalLM(hf_cfg).eval()


def import_hf(model) -> tuple[LlamaConfig, dict]:
  cfg = LlamaConfig.from_hf_dict(model.config.to_dict())
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  return cfg, jax.device_put(hf_io.hf_to_params(cfg, state))


def hf_greedy(model, prompt: list[int], n: int, eos: int | None = None) -> list[int]:
  with torch.no_grad():
    out = model.generate(
      torch.tensor([prompt]),
      max_new_tokens=n,
      do_sample=False,
      eos_token_id=eos,
      pad_token_id=0,
      attention_mask=None,
    )
  return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def tiny(request):
  model = tiny_hf(request.param)
  return (model, *import_hf(model))


def test_batched_greedy_equals_transformers_per_prompt(tiny):
  model, cfg, params = tiny
  ids, attn = pad_prompts(PROMPTS, pad_id=0, multiple=8)
  assert ids.shape == (3, 16) and attn.sum(1).tolist() == [7, 2, 11]
  out = generate(cfg, params, ids, attn, max_new_tokens=12)
  assert isinstance(out, GenerateOutput) and out.tokens.shape == (3, 12)
  assert out.lengths.tolist() == [12, 12, 12]
  for row, prompt in zip(np.asarray(out.tokens), PROMPTS, strict=True):
    assert row.tolist() == hf_greedy(model, prompt, 12)
  # A different amount of left padding does not change the result.
  ids2, attn2 = pad_prompts(PROMPTS, pad_id=3, multiple=32)
  np.testing.assert_array_equal(
    generate(cfg, params, ids2, attn2, max_new_tokens=12).tokens, out.tokens
  )


def test_eos_stops_each_row_and_pads(tiny):
  model, cfg, params = tiny
  ids, attn = pad_prompts(PROMPTS)
  free = np.asarray(generate(cfg, params, ids, attn, max_new_tokens=10).tokens)
  eos = int(free[0, 3])  # row 0 produces this at step 3 (it may appear earlier in other rows)
  out = generate(cfg, params, ids, attn, max_new_tokens=10, eos_ids=[eos], pad_id=-7)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  for i, prompt in enumerate(PROMPTS):
    hits = np.flatnonzero(free[i] == eos)
    n = int(hits[0]) + 1 if hits.size else 10
    assert lengths[i] == n
    np.testing.assert_array_equal(tokens[i, :n], free[i, :n])
    assert (tokens[i, n:] == -7).all()
    assert trim(out.tokens, out.lengths)[i] == hf_greedy(model, prompt, 10, eos=eos)
  assert lengths[0] <= 4


def test_all_rows_done_exits_early_with_pads(tiny):
  _, cfg, params = tiny
  ids, attn = pad_prompts(PROMPTS)
  everything = list(range(VOCAB))
  out = generate(cfg, params, ids, attn, max_new_tokens=6, eos_ids=everything, pad_id=-1)
  assert np.asarray(out.lengths).tolist() == [1, 1, 1]
  assert (np.asarray(out.tokens)[:, 1:] == -1).all()


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_gathered_model_generates_like_hard_masked_model(tiny):
  _, cfg, params = tiny
  k = 24
  scores = jax.random.normal(jax.random.key(4), (cfg.num_hidden_layers, cfg.intermediate_size))
  mask = masking.hard_topk(scores, k)
  ids, attn = pad_prompts(PROMPTS)
  masked = generate(cfg, params, ids, attn, max_new_tokens=12, ffn_masks=mask)
  small = gather.gather_ffn(params, gather.kept_indices(mask, k))
  gathered = generate(gather.gathered_config(cfg, k), small, ids, attn, max_new_tokens=12)
  np.testing.assert_array_equal(gathered.tokens, masked.tokens)
  # [B, L, F] masks equal the shared [L, F] mask, and the mask changes the output.
  per_row = jnp.broadcast_to(mask, (3,) + mask.shape)
  np.testing.assert_array_equal(
    generate(cfg, params, ids, attn, max_new_tokens=12, ffn_masks=per_row).tokens, masked.tokens
  )
  full = generate(cfg, params, ids, attn, max_new_tokens=12)
  assert (np.asarray(full.tokens) != np.asarray(masked.tokens)).any()


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_sampling_is_reproducible_and_topk1_is_greedy(tiny):
  _, cfg, params = tiny
  ids, attn = pad_prompts(PROMPTS)
  greedy = generate(cfg, params, ids, attn, max_new_tokens=8).tokens
  top1 = generate(
    cfg, params, ids, attn, max_new_tokens=8, temperature=1.0, top_k=1, rng=jax.random.key(0)
  ).tokens
  np.testing.assert_array_equal(top1, greedy)
  a = generate(
    cfg, params, ids, attn, max_new_tokens=8, temperature=5.0, rng=jax.random.key(1)
  ).tokens
  b = generate(
    cfg, params, ids, attn, max_new_tokens=8, temperature=5.0, rng=jax.random.key(1)
  ).tokens
  c = generate(
    cfg, params, ids, attn, max_new_tokens=8, temperature=5.0, rng=jax.random.key(2)
  ).tokens
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  with pytest.raises(ValueError, match="explicit rng"):
    generate(cfg, params, ids, attn, max_new_tokens=8, temperature=1.0)


def test_no_recompile_within_a_cache_bucket(tiny):
  _, cfg, params = tiny
  ids, attn = pad_prompts(PROMPTS, multiple=16)
  generate(cfg, params, ids, attn, max_new_tokens=5)
  jitted = compiled_generate(cfg)
  before = jitted._cache_size()
  ids2, attn2 = pad_prompts([p[:2] for p in PROMPTS], multiple=16)  # same padded width
  generate(cfg, params, ids2, attn2, max_new_tokens=5, eos_ids=[1, 2, 3])
  assert jitted._cache_size() == before


def test_pad_prompts_and_chat_prompt_errors():
  with pytest.raises(ValueError, match="no empty prompt"):
    pad_prompts([[1], []])
  assert chat_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  template = (
    "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
  )
  assert chat_prompt("hi", template) == "[user]hi[assistant]"

  class Tok:
    def token_to_id(self, t):
      return {"<|im_end|>": 2, "<|endoftext|>": 0}.get(t)

  assert stop_ids(Tok()) == [0, 2]
