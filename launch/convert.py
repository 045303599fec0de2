"""Import a checkpoint into ifp_jax params and write it back out as an HF Llama directory.

  python -m launch.convert --source=smollm2 --out=/tmp/smollm2_hf [--dtype=bfloat16]
  python -m launch.convert --source=hf:PATH --out=DIR [--overwrite]
  python -m launch.convert --source=gguf:FILE --out=DIR

The weights go through our parameter tree (`hf_io.hf_to_params` -> `hf_io.save_hf_dir`), so the
output is also a round-trip check of the import. Tokenizer files come along: rebuilt from the
GGUF metadata, or copied from the HF source directory.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("source", None, "'smollm2', 'gguf:FILE' or 'hf:DIR'.", required=True)
flags.DEFINE_string("out", None, "Output HF directory.", required=True)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written weights.")
flags.DEFINE_bool("overwrite", False, "Write into a non-empty --out (replacing model files).")

# Files an HF tokenizer may consist of; copied from an hf: source when present.
TOKENIZER_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "chat_template.jinja",
)
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


class ConvertError(Exception):
  """A user-facing problem with the flags or the paths."""


def prepare_out(out: pathlib.Path, overwrite: bool) -> None:
  """Refuses a non-empty `out` unless `overwrite`; then removes the files we would write."""
  if out.exists() and not out.is_dir():
    raise ConvertError(f"--out={out} exists and is not a directory")
  if out.is_dir() and any(out.iterdir()):
    if not overwrite:
      raise ConvertError(
        f"--out={out} is not empty; pass --overwrite to replace the model "
        "files in it, or choose another directory"
      )
    stale = [out / n for n in MODEL_FILES + TOKENIZER_FILES]
    stale += list(out.glob("model*.safetensors"))
    for f in stale:
      if f.is_file():
        f.unlink()
  out.mkdir(parents=True, exist_ok=True)


def read_source(source: str):
  """-> (cfg, numpy params, special token ids {bos,eos,pad} or {}, writer of tokenizer files)."""
  from ifp_jax.io import hf as hf_io
  from ifp_jax.model.config import LlamaConfig

  if source == "smollm2" or source.startswith("gguf:"):
    from ifp_jax.io import gguf as gguf_io

    path = gguf_io.find_smollm2_gguf() if source == "smollm2" else pathlib.Path(source[5:])
    hf_config, state = gguf_io.read_gguf_llama(path)
    cfg = LlamaConfig.from_hf_dict(hf_config, source=str(path))
    params = hf_io.hf_to_params(cfg, state, source=str(path))
    special = {k: v for k, v in gguf_io.gguf_special_ids(path).items() if k != "unk"}
    return cfg, params, special, lambda out: gguf_io.write_hf_tokenizer_files(path, out)
  if not source.startswith("hf:"):
    raise ConvertError(f"--source={source!r}: expected 'smollm2', 'gguf:FILE' or 'hf:DIR'")
  src = pathlib.Path(source[3:])
  if not (src / "config.json").is_file():
    raise ConvertError(f"--source={source!r}: {src / 'config.json'} not found")
  cfg, params = hf_io.load_hf_dir(src)
  special = {}
  for name in ("config.json", "generation_config.json"):
    if (src / name).is_file():
      d = json.loads((src / name).read_text())
      special.update(
        {k: d[f"{k}_token_id"] for k in ("bos", "eos", "pad") if d.get(f"{k}_token_id") is not None}
      )

  def copy_tokenizer(out: pathlib.Path) -> list[pathlib.Path]:
    copied = []
    for name in TOKENIZER_FILES:
      if (src / name).is_file():
        copied.append(pathlib.Path(shutil.copy2(src / name, out / name)))
    return copied

  return cfg, params, special, copy_tokenizer


def convert(source: str, out: pathlib.Path, dtype: str, overwrite: bool) -> list[pathlib.Path]:
  """Writes the HF directory; returns the files written."""
  from ifp_jax.io import hf as hf_io

  prepare_out(out, overwrite)
  cfg, params, special, write_tokenizer = read_source(source)
  gen = {f"{k}_token_id": v for k, v in special.items()}
  hf_io.save_hf_dir(cfg, params, out, dtype=dtype, generation_config=gen)
  cfg_file = out / "config.json"  # transformers also reads the special ids from config.json
  cfg_file.write_text(json.dumps(dict(json.loads(cfg_file.read_text()), **gen), indent=2))
  written = write_tokenizer(out)
  if not written:
    print(f"warning: {source} has no tokenizer files; {out} holds only the model")
  return sorted(p for p in out.iterdir() if p.is_file())


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  out = pathlib.Path(FLAGS.out)
  try:
    files = convert(FLAGS.source, out, FLAGS.dtype, FLAGS.overwrite)
  except (ConvertError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  size = sum(f.stat().st_size for f in files) / 1e6
  print(f"wrote {out} ({FLAGS.dtype}, {size:.1f} MB): {', '.join(f.name for f in files)}")


if __name__ == "__main__":
  app.run(main)
