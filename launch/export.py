"""Export a trained IFP run to PyTorch / HF transformers (no ifp_jax needed to use the output).

  python -m launch.export --workdir=DIR --out=OUT --what=full
  python -m launch.export --workdir=DIR --out=OUT --what=pruned --task=arithmetic [--fold_soft_mask]
  python -m launch.export --workdir=DIR --out=OUT --what=pruned --task=arithmetic,string,code
  python -m launch.export --workdir=DIR --out=OUT --what=pruned --instruction="Reverse the word."
  python -m launch.export --workdir=DIR --out=OUT --what=pruned --units=kept.json
  python -m launch.export --workdir=DIR --out=OUT --what=pruned --instruction="..." \
      --mask_source=griffin          # training-free GRIFFIN units for that prompt
  python -m launch.export --workdir=DIR --out=OUT --what=predictor
  python -m launch.export --source=smollm2 --k=512 --out=OUT --what=full   # no run: real
                                      SmolLM2 weights, random predictor head (for checks)

full       the LLM at full width: an HF LlamaForCausalLM directory (safetensors, sharded with an
           index above --max_shard_mb; config.json, generation_config.json, tokenizer.json +
           tokenizer_config.json with the chat template).
pruned     the dense width-k Llama for one instruction or named task (OUT), or for a list of
           tasks (OUT/<task>/ each). --fold_soft_mask scales the kept down_proj rows by the
           SoftTopK values (the training-time soft mask) instead of the binary eval mask.
predictor  backbone/ (HF Llama) + head.safetensors + predictor_config.json + ifp_predictor.py,
           a torch-only module mapping an instruction to the kept units (and pruning a full
           transformers Llama with them), + the predictor's own tokenizer files (the LLM's
           when they share one; a run with data.predictor_tokenizer carries that one).

Outputs are written to OUT.tmp-XXXX and renamed when complete; an existing non-empty OUT needs
--overwrite. Params are gathered to the host one leaf at a time and written by process 0.
Task names: the built-in skills, skill domains and benchmarks (ifp_jax.infer.instruction_masks).
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training run directory (launch.train --workdir).")
flags.DEFINE_string(
  "source",
  None,
  "Instead of --workdir: a model spec ('smollm2', 'gguf:FILE', 'hf:DIR') whose weights go "
  "into an IFP model with a randomly initialised predictor head.",
)
flags.DEFINE_string("out", None, "Output directory.", required=True)
flags.DEFINE_enum("what", "full", ["full", "pruned", "predictor"], "What to export.")
flags.DEFINE_string("instruction", None, "--what=pruned: the instruction the predictor reads.")
flags.DEFINE_list("task", [], "--what=pruned: named task(s); several -> OUT/<task>/ each.")
flags.DEFINE_string("units", None, "--what=pruned: JSON/.npy file of kept units [layers, k].")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Dtype of the written weights.")
flags.DEFINE_bool("fold_soft_mask", False, "--what=pruned: fold SoftTopK values into down_proj.")
flags.DEFINE_enum(
  "mask_source",
  "predictor",
  ["predictor", "griffin"],
  "--what=pruned with --instruction/--task: who picks the units; 'griffin' = training-free, the "
  "full LLM prefills the instruction as the prompt (ifp_jax/infer/griffin.py).",
)
flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --out.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.DEFINE_string(
  "tokenizer",
  None,
  "Tokenizer spec for the exported files (default: the run's; --what=predictor: the "
  "predictor's); it must give the run's ids, else the export fails.",
)
flags.DEFINE_float(
  "max_shard_mb",
  2048,
  "Largest safetensors shard in MiB; larger models get "
  "several shards + model.safetensors.index.json.",
)
flags.DEFINE_list(
  "mesh",
  ["1", "1", "1"],
  "(data, fsdp, tensor) mesh the checkpoint is restored "
  "on (-1 = all remaining devices); large models: shard over fsdp.",
)
flags.DEFINE_integer("k", 512, "--source=smollm2: kept units per layer.")
flags.DEFINE_integer("predictor_layers", 4, "--source=smollm2: backbone layers.")
flags.DEFINE_integer("seed", 0, "--source=smollm2: head init seed.")


def read_units(path: str):
  import numpy as np

  p = pathlib.Path(path)
  if not p.is_file():
    raise FileNotFoundError(f"--units={path}: no such file")
  if p.suffix == ".npy":
    return np.load(p)
  data = json.loads(p.read_text())
  return data["kept_units"] if isinstance(data, dict) else data


def main(argv):
  del argv
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  from ifp_jax.train import distributed

  distributed.initialize()
  import jax

  from ifp_jax.io import export
  from ifp_jax.train import sharding

  try:
    if (FLAGS.workdir is None) == (FLAGS.source is None):
      raise export.ExportError("pass exactly one of --workdir or --source=SPEC")
    if FLAGS.what != "pruned" and (
      FLAGS.instruction or FLAGS.task or FLAGS.units or FLAGS.fold_soft_mask
    ):
      raise export.ExportError(
        "--instruction/--task/--units/--fold_soft_mask go with --what=pruned"
      )
    export.writer.check_out(FLAGS.out, FLAGS.overwrite)  # fail before loading anything
    if FLAGS.source is not None:
      src = export.pretrained_source(
        FLAGS.source, k=FLAGS.k, predictor_layers=FLAGS.predictor_layers, seed=FLAGS.seed
      )
    else:
      shape = tuple(int(x) for x in FLAGS.mesh)
      devices = jax.devices() if -1 in shape else jax.devices()[: math.prod(shape)]
      mesh = sharding.make_mesh(shape, devices)
      src = export.from_run(FLAGS.workdir, step=FLAGS.step, mesh=mesh)
    common = dict(
      dtype=FLAGS.dtype,
      overwrite=FLAGS.overwrite,
      tokenizer_spec=FLAGS.tokenizer,
      max_shard_bytes=int(FLAGS.max_shard_mb * 1024**2),
    )
    if FLAGS.what == "full":
      out = export.export_full(src, FLAGS.out, **common)
    elif FLAGS.what == "pruned":
      units = read_units(FLAGS.units) if FLAGS.units else None
      out = export.export_pruned(
        src,
        FLAGS.out,
        instruction=FLAGS.instruction,
        tasks=FLAGS.task,
        units=units,
        fold_soft_mask=FLAGS.fold_soft_mask,
        mask_source=FLAGS.mask_source,
        **common,
      )
    else:
      out = export.export_predictor(src, FLAGS.out, **common)
  except (export.ExportError, FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  if export.writer.is_writer():
    files = [f for f in pathlib.Path(out).rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"wrote {out} ({FLAGS.what}, {FLAGS.dtype}, {len(files)} files, {size:.1f} MB)")


if __name__ == "__main__":
  app.run(main)
