"""Held-out domain documents and their continuation NLL (issue 13)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.data.tokenization import load_tokenizer
from ifp_jax.evals import domains
from ifp_jax.infer import griffin
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder

LLM = LlamaConfig(
  vocab_size=64,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  initializer_range=0.2,
)


def _docs(n=3, length=24, seed=0):
  rng = np.random.default_rng(seed)
  return [domains.Doc("x", str(i), tuple(rng.integers(0, 64, length).tolist())) for i in range(n)]


@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_continuation_nll_matches_direct_logits():
  params = nn.unbox(Decoder(LLM).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  docs, p = _docs(), 10
  masks = griffin.units_to_mask(griffin.random_units(2, 48, 16, seed=1), 48)
  got = domains.continuation_nll(LLM, params, docs, p, np.stack([masks] * 3), batch_size=2)
  ids = jnp.asarray([d.ids for d in docs])
  logits = Decoder(LLM).apply({"params": params}, ids, ffn_masks=jnp.stack([masks] * 3)).logits
  logp = np.asarray(jax.nn.log_softmax(logits, -1))
  want = [-np.mean([logp[b, t - 1, d.ids[t]] for t in range(p, 24)]) for b, d in enumerate(docs)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Dense prefill + pruned continuation: with every unit kept it is the full model; with a real
  # mask it differs from pruning the prompt too.
  ones = np.ones((3, 2, 48), np.float32)
  dense = domains.continuation_nll_full_prefill(LLM, params, docs, p, ones, batch_size=2)
  np.testing.assert_allclose(dense, domains.continuation_nll(LLM, params, docs, p), rtol=1e-5)
  mixed = domains.continuation_nll_full_prefill(LLM, params, docs, p, np.stack([masks] * 3))
  assert not np.allclose(mixed, got)


def test_docs_are_fixed_and_splits_disjoint():
  tok = load_tokenizer("bytes")
  held = domains.load_docs(tok, "code", "heldout", 4, 64)
  calib = domains.load_docs(tok, "code", "calib", 4, 64)
  assert len(held) == 4 and all(len(d.ids) == 64 for d in held)
  assert held == domains.load_docs(tok, "code", "heldout", 4, 64)
  files = lambda ds: {d.key.split("#")[0] for d in ds}  # noqa: E731
  assert not files(held) & files(calib)
  with pytest.raises(ValueError, match="unknown domain"):
    domains.load_docs(tok, "poetry", "heldout", 1, 8)


def test_chat_sft_pairs_never_train_on_a_heldout_chat_document():
  """Regime (b)'s ShareGPT SFT pairs: answers only from 'calib' chats, none of the held-out
  documents' texts, and short enough for a 256-token row."""
  try:
    pairs = domains.chat_sft_pairs(200)
  except domains.DomainUnavailable as e:
    pytest.skip(str(e))
  assert len(pairs) == 200 and pairs == domains.chat_sft_pairs(200)
  assert all(len(p["prompt"]) <= 400 and len(p["prompt"] + p["response"]) <= 800 for p in pairs)
  tok = load_tokenizer("bytes")
  held = domains.load_docs(tok, "chat", "heldout", 12, 64)
  trained = "\n".join(p["response"] for p in pairs)
  assert held and not any(tok.decode(list(d.ids)) in trained for d in held)
