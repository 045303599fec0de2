"""HF architectures end to end: tiny random transformers models -> train -> CLIs -> HF export.

The train-and-CLI test is the user path of issue 14: an imported checkpoint (here with Llama-3
rope scaling) trains, then launch.generate, launch.eval (perplexity) and launch.export
--what=pruned run on the WORKDIR, and the pruned export generates in transformers the greedy
tokens our pruned model generates.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import train_utils as tu
import transformers

ROOT = pathlib.Path(__file__).resolve().parents[1]
LLAMA3_SCALING = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 16,
}
VOCAB = 384  # >= the byte tokenizer's ids; divides the test meshes


def tiny_llama(folder: pathlib.Path, tied: bool, rope_scaling) -> pathlib.Path:
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=tied,
    rope_scaling=rope_scaling,
    initializer_range=0.1,
  )
  transformers.LlamaForCausalLM(cfg).eval().save_pretrained(folder)
  return folder


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
  env.pop("XLA_FLAGS", None)  # one CPU device is enough (and faster) for a CLI
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
def test_llama3_rope_scaling_trains_then_generates_evaluates_exports(tmp_path, tmp_path_factory):
  import jax

  from ifp_jax.infer.pruned import PrunedRunner
  from ifp_jax.infer.run_loader import load_run
  from ifp_jax.train.trainer import Trainer

  hf_dir = tiny_llama(tmp_path / "hf", tied=False, rope_scaling=LLAMA3_SCALING)
  workdir = tmp_path / "run"
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    model__init_from=f"hf:{hf_dir}",
    model__predictor_init_layers=1,
    model__k=64,
    cpt__steps=2,
    sft__steps=2,
    train__batch_size=4,
  )
  Trainer(config, workdir, devices=jax.devices()[:1]).run()

  instruction = "Reverse the word. hello"
  res = run_cli(
    "launch.generate",
    f"--workdir={workdir}",
    f"--prompt={instruction}",
    "--max_new_tokens=6",
    "--nochat",
  )
  assert res.returncode == 0, res.stderr
  res = run_cli(
    "launch.eval",
    f"--workdir={workdir}",
    "--benchmarks=perplexity",
    "--limit=perplexity:2",
    "--variants=full,per_input",
    "--nomask_analysis",
  )
  assert res.returncode == 0, res.stderr
  results = json.loads((workdir / "eval" / "results.json").read_text())
  assert "perplexity" in json.dumps(results)
  out = tmp_path / "pruned"
  res = run_cli(
    "launch.export",
    f"--workdir={workdir}",
    f"--out={out}",
    "--what=pruned",
    f"--instruction={instruction}",
  )
  assert res.returncode == 0, res.stderr

  # The export is the same architecture (llama3 rope scaling kept) and generates our tokens.
  exported = json.loads((out / "config.json").read_text())
  scaling = exported.get("rope_scaling") or exported.get("rope_parameters")
  assert scaling["rope_type"] == "llama3" and scaling["factor"] == 8.0
  run = load_run(workdir, dtype="float32")
  runner = PrunedRunner(run, "per_input")
  ids = run.tokenizer.encode(instruction)
  ours = runner.generate_ids(
    [instruction], instructions=[instruction], max_new_tokens=8, chat=False
  )[0]
  stops = list(run.tokenizer.stop_ids) or None
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert model.config.intermediate_size == 64
  with torch.no_grad():
    ref = model.generate(
      torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=stops, pad_token_id=0
    )[0, len(ids) :].tolist()
  np.testing.assert_array_equal(ours, ref)


def test_configs_are_hashable_and_round_trip_through_json():
  from ifp_jax.model.config import LlamaConfig, RopeScaling
  from ifp_jax.model.ifp_model import IFPConfig

  llm = LlamaConfig(rope_scaling=dict(LLAMA3_SCALING), tie_word_embeddings=False)
  assert isinstance(llm.rope_scaling, RopeScaling)
  ifp = IFPConfig(llm=llm, predictor=llm.replace(num_hidden_layers=1), k=32)
  assert hash(ifp) == hash(IFPConfig.from_dict(json.loads(json.dumps(ifp.to_dict()))))
  assert IFPConfig.from_dict(json.loads(json.dumps(ifp.to_dict()))) == ifp
  # Metadata written before this change: rope_scaling as the HF dict (transformers 5 put
  # rope_theta inside it), every IFP field by hand.
  old = {
    "llm": dict(llm.to_dict(), rope_scaling=dict(LLAMA3_SCALING, rope_theta=500.0)),
    "predictor": None,
    "head": {"hidden": 128, "activation": "gelu", "out_init_std": 0.02},
    "mask_kind": "static",
    "k": 32,
    "eps": 0.1,
    "hc_init_log_alpha": 2.0,
  }
  assert IFPConfig.from_dict(old).llm == llm
  with pytest.raises(ValueError, match="unknown LlamaConfig fields \\['rope_scale'\\]"):
    LlamaConfig.from_dict({"rope_scale": 1})
  with pytest.raises(ValueError, match="rope_type='yarn'"):
    LlamaConfig(rope_scaling={"rope_type": "yarn", "factor": 2.0})


def test_model_specs_resolve_with_the_same_errors(tmp_path):
  from ifp_jax.io.models import parse_spec

  assert parse_spec("smollm2") == ("smollm2", None)
  hf_dir = tiny_llama(tmp_path / "hf", tied=True, rope_scaling=None)
  assert parse_spec(f"hf:{hf_dir}") == ("hf", hf_dir) == parse_spec(str(hf_dir))
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  assert parse_spec(str(tmp_path / "run"))[0] == "workdir"
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    parse_spec(f"hf:{tmp_path / 'nothing'}", "model.init_from")
  with pytest.raises(FileNotFoundError, match="GGUF file .* not found"):
    parse_spec(f"gguf:{tmp_path / 'x.gguf'}")
  with pytest.raises(ValueError, match="unknown prefix"):
    parse_spec("hff:x")
  with pytest.raises(FileNotFoundError, match="neither an HF directory"):
    parse_spec(str(tmp_path / "nothing"))
