"""HF architectures end to end: tiny random transformers models -> train -> CLIs -> HF export.

The train-and-CLI test is the user path of issue 14: an imported checkpoint (Llama with and
without Llama-3 rope scaling, Qwen2 with biases, Qwen3 with q/k norm) trains, then
launch.generate, launch.eval (perplexity) and launch.export --what=pruned run on the WORKDIR,
and the pruned export generates in transformers the greedy tokens our pruned model generates.
"""

from __future__ import annotations

import json
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


ARCHS = {  # name -> (transformers config class, model class, extra config fields)
  "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
  "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"use_sliding_window": False}),
  "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"use_sliding_window": False, "head_dim": 16}),
}
# (architecture, tied, rope scaling): the acceptance matrix of issue 14.
CASES = [
  ("llama", True, None),
  ("llama", False, LLAMA3_SCALING),
  ("qwen2", False, None),
  ("qwen3", True, None),
]


def tiny_model(folder: pathlib.Path, arch: str, tied: bool, rope_scaling) -> pathlib.Path:
  """A random 2-layer transformers model saved to `folder`; norms and biases randomised (the
  default init leaves them at 1 / 0, which would not test them)."""
  cfg_cls, model_cls, extra = ARCHS[arch]
  torch.manual_seed(0)
  cfg = getattr(transformers, cfg_cls)(
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
    **extra,
  )
  model = getattr(transformers, model_cls)(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.copy_(1 + 0.1 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
  model.save_pretrained(folder)
  return folder


def tiny_llama(folder: pathlib.Path, tied: bool, rope_scaling) -> pathlib.Path:
  return tiny_model(folder, "llama", tied, rope_scaling)


def hf_logits(folder: pathlib.Path, ids: np.ndarray) -> np.ndarray:
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("arch,tied,rope_scaling", CASES)
@pytest.mark.slow  # > 10 s on 2 cores (measured): make test only, not test-fast
def test_import_and_export_match_transformers(tmp_path, arch, tied, rope_scaling):
  import jax.numpy as jnp

  from ifp_jax.io import hf as hf_io
  from ifp_jax.io.export import writer
  from ifp_jax.model.decoder import Decoder

  src = tiny_model(tmp_path / "src", arch, tied, rope_scaling)
  cfg, params = hf_io.load_hf_dir(src)
  assert cfg.model_type == arch and cfg.tie_word_embeddings == tied
  assert (cfg.rope_scaling is not None) == (rope_scaling is not None)
  ids = np.random.default_rng(0).integers(0, VOCAB, size=(2, 40))  # > original ctx 16
  ours = np.asarray(Decoder(cfg).apply({"params": params}, jnp.asarray(ids)).logits)
  imported = np.abs(ours - hf_logits(src, ids)).max()
  out = writer.write_hf_model(cfg, params, tmp_path / "out")
  exported_cfg = json.loads((out / "config.json").read_text())
  assert exported_cfg["model_type"] == arch
  assert exported_cfg["architectures"] == [ARCHS[arch][1]]
  exported = np.abs(ours - hf_logits(out, ids)).max()
  print(
    f"{arch} tied={tied} rope_scaling={bool(rope_scaling)}: max |logit diff| import "
    f"{imported:.2e} export {exported:.2e}"
  )
  assert imported < 1e-4 and exported < 1e-4


@pytest.mark.parametrize(
  "arch,field,value,match",
  [
    ("qwen2", "use_sliding_window", True, "use_sliding_window=True"),
    ("qwen2", "num_experts", 4, "num_experts=4"),
    ("qwen3", "layer_types", ["sliding_attention", "full_attention"], "layer_types="),
    ("qwen2", "model_type", "qwen2_moe", "model_type='qwen2_moe'"),
  ],
)
def test_unsupported_hf_configs_name_the_field(tmp_path, arch, field, value, match):
  from ifp_jax.io import hf as hf_io

  src = tiny_model(tmp_path, arch, False, None)
  d = json.loads((src / "config.json").read_text())
  d[field] = value
  (src / "config.json").write_text(json.dumps(d))
  with pytest.raises(ValueError, match=match):
    hf_io.load_hf_dir(src)


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  # one CPU device is enough (and faster) for a CLI
  env = tu.cli_env(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
@pytest.mark.parametrize("arch,tied,rope_scaling", CASES)
def test_trains_then_generates_evaluates_exports(
  tmp_path, tmp_path_factory, arch, tied, rope_scaling
):
  import jax

  from ifp_jax.infer.pruned import PrunedRunner
  from ifp_jax.infer.run_loader import load_run
  from ifp_jax.train.trainer import Trainer

  hf_dir = tiny_model(tmp_path / "hf", arch, tied, rope_scaling)
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

  # The export is the same architecture (rope scaling kept) and generates our tokens.
  exported = json.loads((out / "config.json").read_text())
  assert exported["model_type"] == arch
  if rope_scaling:
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
