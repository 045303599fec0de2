"""Import/export parity with transformers on random tiny Llamas (f32, 1e-4)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from ifp_jax.io import hf as hf_io
from ifp_jax.io.export import writer
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder

LLAMA3_SCALING = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 16,
}


def tiny_hf_model(kv_heads: int, tied: bool, rope_scaling, seed=0):
  torch.manual_seed(seed)
  hf_cfg = transformers.LlamaConfig(
    vocab_size=101,
    hidden_size=72,
    intermediate_size=40,
    num_hidden_layers=3,
    num_attention_heads=9,
    num_key_value_heads=kv_heads,
    head_dim=8,
    rms_norm_eps=1e-5,
    rope_theta=500.0,
    max_position_embeddings=256,
    tie_word_embeddings=tied,
    rope_scaling=rope_scaling,
  )
  model = transformers.LlamaForCausalLM(hf_cfg).eval()
  with torch.no_grad():  # default init leaves norms at 1: randomise so they are tested too
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
  return model


def init_numpy(cfg, ids, seed=0):
  return jax.tree.map(np.asarray, nn.unbox(Decoder(cfg).init(jax.random.key(seed), ids)["params"]))


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.float().numpy()


def our_logits(cfg: LlamaConfig, params, ids: np.ndarray) -> np.ndarray:
  out = Decoder(cfg).apply({"params": params}, jnp.asarray(ids))
  return np.asarray(out.logits)


CASES = [(1, True, None), (3, False, None), (3, True, LLAMA3_SCALING), (1, False, LLAMA3_SCALING)]


@pytest.mark.parametrize("kv_heads,tied,rope_scaling", CASES)
def test_import_matches_transformers(tmp_path, kv_heads, tied, rope_scaling):
  model = tiny_hf_model(kv_heads, tied, rope_scaling)
  model.save_pretrained(tmp_path)
  cfg, params = hf_io.load_hf_dir(tmp_path)
  assert cfg.num_key_value_heads == kv_heads and cfg.tie_word_embeddings == tied
  assert (cfg.rope_scaling is not None) == (rope_scaling is not None)
  ids = np.random.default_rng(0).integers(0, 101, size=(2, 40))  # longer than original ctx 16
  np.testing.assert_allclose(
    our_logits(cfg, params, ids), hf_logits(model, ids), atol=1e-4, rtol=1e-4
  )


@pytest.mark.parametrize("kv_heads,tied,rope_scaling", CASES)
@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_export_loads_in_transformers(tmp_path, kv_heads, tied, rope_scaling):
  cfg = LlamaConfig(
    vocab_size=101,
    hidden_size=72,
    intermediate_size=40,
    num_hidden_layers=3,
    num_attention_heads=9,
    num_key_value_heads=kv_heads,
    head_dim=8,
    rope_theta=500.0,
    tie_word_embeddings=tied,
    rope_scaling=rope_scaling,
    initializer_range=0.2,
  )
  ids = np.random.default_rng(1).integers(0, 101, size=(2, 24))
  params = init_numpy(cfg, jnp.asarray(ids), seed=3)
  writer.write_hf_model(cfg, params, tmp_path, max_shard_bytes=100_000, overwrite=True)  # shards
  assert (tmp_path / "model.safetensors.index.json").exists()
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  np.testing.assert_allclose(
    hf_logits(model, ids), our_logits(cfg, params, ids), atol=1e-4, rtol=1e-4
  )
  # Round trip through our reader is exact.
  cfg2, params2 = hf_io.load_hf_dir(tmp_path)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_bfloat16_export_round_trip(tmp_path):
  cfg = LlamaConfig(
    vocab_size=50,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
  )
  params = init_numpy(cfg, jnp.ones((1, 4), jnp.int32))
  writer.write_hf_model(cfg, params, tmp_path, dtype="bfloat16", overwrite=True)
  assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
  _, back = hf_io.load_hf_dir(tmp_path)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-6), back, params)


def test_unsupported_config_field_is_named(tmp_path):
  tiny_hf_model(1, True, None).save_pretrained(tmp_path)
  cfg = json.loads((tmp_path / "config.json").read_text())
  cfg["hidden_act"] = "gelu"
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="hidden_act='gelu'"):
    hf_io.load_hf_dir(tmp_path)
  cfg["hidden_act"], cfg["attention_bias"] = "silu", True
  (tmp_path / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="attention_bias=True"):
    hf_io.load_hf_dir(tmp_path)


def test_missing_and_misshapen_weights_are_named():
  cfg = LlamaConfig(
    vocab_size=50,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
  )
  params = init_numpy(cfg, jnp.ones((1, 4), jnp.int32))
  sd = dict(hf_io.params_to_hf(cfg, params))
  del sd["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
    hf_io.hf_to_params(cfg, sd)
  sd = dict(hf_io.params_to_hf(cfg, params))
  sd["model.norm.weight"] = np.ones(17, np.float32)
  with pytest.raises(ValueError, match=r"norm/weight has shape \(17,\)"):
    hf_io.hf_to_params(cfg, sd)
  sd = dict(hf_io.params_to_hf(cfg, params))
  sd["model.layers.0.self_attn.q_proj.bias"] = np.zeros(16, np.float32)
  with pytest.raises(ValueError, match="unexpected weights"):
    hf_io.hf_to_params(cfg, sd)
