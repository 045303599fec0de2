"""Compile-only memory check: the train step compiles for a mesh on abstract inputs, and the
reported per-device state bytes follow the shardings (fsdp splits, data replicates, bf16 compute
keeps f32 master weights); the paper config fits its 8 x 80 GB recipe; the launcher runs one
child process per device count and rejects an indivisible config naming the field.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import pytest
import train_utils as tu

from ifp_jax.train import compile_check, validate

REPO = pathlib.Path(__file__).resolve().parents[1]
GIB = 1024**3


@pytest.fixture(scope="module")
def reports():
  """The tiny test config compiled on three 8-device layouts (nothing is allocated)."""
  assert len(jax.devices()) == 8
  out = {}
  for name, mesh, dtype in [
    ("data", (8, 1, 1), "float32"),
    ("fsdp", (1, 8, 1), "float32"),
    ("fsdp_bf16", (1, 8, 1), "bfloat16"),
    ("mixed", (2, 2, 2), "float32"),
  ]:
    config = tu.small_config("/nonexistent", mesh=mesh, model__dtype=dtype)
    config.lock()
    out[name] = compile_check.compile_train_step(config)
  return out


def test_state_bytes_follow_the_shardings(reports):
  data, fsdp, mixed = reports["data"], reports["fsdp"], reports["mixed"]
  full = data.params_total * 4  # f32
  assert data.param_bytes == data.replicated_param_bytes == full  # data parallel: replicated
  # FSDP: whatever has an embed axis is split 8 ways; what stays whole is the leaves without
  # one (norms, biases, and the predictor head's [pred_hidden, L * d_ff] kernel: its 'mlp' axis
  # maps to tensor only; 98k of the 616k parameters here).
  whole = fsdp.replicated_param_bytes
  assert fsdp.param_bytes - whole == pytest.approx((full - whole) / 8, rel=0.01)
  assert fsdp.param_bytes < full / 3
  assert mixed.param_bytes < full / 3
  for r in reports.values():
    # Adam: two f32 moments per trained parameter (not the 2 Lagrange scalars) + step counts.
    assert abs(r.opt_bytes - 2 * r.param_bytes) <= 64, (r.opt_bytes, r.param_bytes)
    assert r.argument_bytes >= r.param_bytes + r.opt_bytes  # + the batch shard
    assert r.alias_bytes >= r.param_bytes + r.opt_bytes  # the state is donated
    assert r.temp_bytes > 0 and r.peak_bytes > r.argument_bytes
  assert data.llm_params + data.predictor_params + 2 == data.params_total


def test_bf16_compute_keeps_f32_master_weights(reports):
  f32, bf16 = reports["fsdp"], reports["fsdp_bf16"]
  assert bf16.dtype == "bfloat16"
  assert bf16.param_bytes == f32.param_bytes and bf16.opt_bytes == f32.opt_bytes


def _paper(recipe):
  path = REPO / "configs" / "paper_9b_to_3b.py"
  spec = importlib.util.spec_from_file_location("_paper_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(recipe)
  config.lock()
  return config, module.RECIPES[recipe]


@pytest.mark.slow
def test_paper_config_compiles_and_fits_8_h100(capsys):
  config, recipe = _paper("h100x8")
  assert recipe["devices"] == len(jax.devices())
  r = compile_check.compile_train_step(config, process_count=recipe["processes"])
  with capsys.disabled():
    print("\n" + compile_check.describe(r))
  assert 9.4e9 < r.llm_params < 9.6e9  # 56 x 2048 x 24576 SwiGLU + attention + embeddings
  assert 0.45e9 < r.predictor_params < 0.5e9  # ~300M backbone + 176M head
  # f32 params and Adam moments, FSDP over 8: ~(4 + 8) bytes x 10B / 8, plus what stays whole.
  assert r.param_bytes < 1.2 * r.params_total * 4 / 8
  assert r.peak_bytes < recipe["hbm_gib"] * GIB


def test_paper_config_tensor_parallel_limits():
  config, _ = _paper("h100x8")
  ifp = _ifp(config)
  warnings = validate.validate(config, ifp, (1, 1, 8))  # tensor 8: only the 2 KV heads repeat
  assert [w.field for w in warnings] == ["model.llm.num_key_value_heads"]
  with pytest.raises(validate.ConfigValidationError) as e:
    validate.validate(config, ifp, (1, 1, 16))
  assert {p.field for p in e.value.problems} == {"model.predictor.num_attention_heads"}
  assert "model.predictor.num_attention_heads=8 is not divisible by mesh tensor=16" in str(e.value)
  with pytest.raises(
    validate.ConfigValidationError, match="model.k=6656 is not divisible by mesh tensor=1024"
  ):
    validate.validate(config, ifp, (1, 1, 1024))


def _ifp(config):
  from ifp_jax.data.tokenization import load_tokenizer
  from ifp_jax.train.trainer import resolve_models

  return resolve_models(config, load_tokenizer(config.data.tokenizer))[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run(
    [sys.executable, "-m", "launch.compile_check", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.slow
def test_cli_prints_the_memory_table_for_a_device_count():
  res = _cli(
    "--config=configs/tiny.py",
    "--num_devices=4",
    "--mesh=2,2,1",
    "--config.model.llm.num_hidden_layers=2",
  )
  assert res.returncode == 0, res.stderr[-3000:]
  assert "train step (cpt) on 4 devices, mesh {'data': 2, 'fsdp': 2, 'tensor': 1}" in res.stderr
  assert "| tiny.py | 4 | (2, 2, 1) | 16 x 128 | " in res.stdout


@pytest.mark.slow
def test_cli_rejects_an_indivisible_config_naming_the_field():
  res = _cli("--config=configs/tiny.py", "--num_devices=2", "--mesh=1,1,2", "--config.model.k=127")
  assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
  assert "model.k=127 is not divisible by mesh tensor=2" in res.stderr
