"""Import a checkpoint into ifp_jax params and write it back out as an HF directory.

  python -m launch.convert --source=smollm2 --out=/tmp/smollm2_hf [--dtype=bfloat16]
  python -m launch.convert --source=hf:PATH --out=DIR [--overwrite]
  python -m launch.convert --source=gguf:FILE --out=DIR
  python -m launch.convert --source=WORKDIR --out=DIR   # a training run's full-width LLM

The source is any model spec (`ifp_jax.io.models`); the weights go through our parameter tree
and out through the export writer (`ifp_jax.io.export.writer`: written to OUT.tmp-XXXX and
renamed when complete, a complete config.json with the source's special ids, tokenizer files),
so the output is also a round-trip check of the import.
"""

from __future__ import annotations

import pathlib
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string(
  "source", None, "'smollm2', 'gguf:FILE', 'hf:DIR' or a training WORKDIR.", required=True
)
flags.DEFINE_string("out", None, "Output HF directory.", required=True)
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written weights.")
flags.DEFINE_bool("overwrite", False, "Replace a non-empty --out.")


def convert(source: str, out: pathlib.Path, dtype: str, overwrite: bool) -> list[pathlib.Path]:
  """Writes the HF directory atomically; returns the files written."""
  from ifp_jax.io.export import writer
  from ifp_jax.io.models import resolve_model

  out = writer.check_out(out, overwrite)  # fail before loading anything
  model = resolve_model(source, flag="--source")
  if model.tokenizer_spec is None:
    print(f"warning: {source} has no tokenizer files; {out} holds only the model")
  writer.write_hf_model(
    model.cfg,
    model.params,
    out,
    dtype=dtype,
    overwrite=overwrite,
    special_ids=model.special_ids,
    tokenizer_spec=model.tokenizer_spec,
  )
  return sorted(p for p in out.iterdir() if p.is_file())


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from ifp_jax.io.export import ExportError

  out = pathlib.Path(FLAGS.out)
  try:
    files = convert(FLAGS.source, out, FLAGS.dtype, FLAGS.overwrite)
  except (ExportError, FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  size = sum(f.stat().st_size for f in files) / 1e6
  print(f"wrote {out} ({FLAGS.dtype}, {size:.1f} MB): {', '.join(f.name for f in files)}")


if __name__ == "__main__":
  app.run(main)
