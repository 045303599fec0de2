"""Export to PyTorch / HF transformers: full masked LLM, per-task pruned Llamas, the predictor.

  from ifp_jax.io import export
  src = export.from_run(WORKDIR)               # or export.smollm2_source(k=512)
  export.export_full(src, OUT)
  export.export_pruned(src, OUT, tasks=["arithmetic"])  # or instruction=...
  export.export_predictor(src, OUT)            # + ifp_predictor.py (torch only)

CLI: `python -m launch.export`. Modules: `source` (what is exported), `writer` (atomic
directories, leaf-by-leaf sharded safetensors), `hf_tokenizer` (tokenizer files + id check),
`exporters` (the three exports).
"""

from ifp_jax.io.export.exporters import (
  PREDICTOR_FILE,
  check_units,
  export_full,
  export_predictor,
  export_pruned,
  select_units,
)
from ifp_jax.io.export.hf_tokenizer import TokenizerMismatchError, verify_tokenizer
from ifp_jax.io.export.source import ExportSource, from_run, pretrained_source, smollm2_source
from ifp_jax.io.export.writer import COMPLETE_MARKER, DEFAULT_SHARD_BYTES, ExportError

__all__ = [
  "COMPLETE_MARKER",
  "DEFAULT_SHARD_BYTES",
  "ExportError",
  "ExportSource",
  "PREDICTOR_FILE",
  "TokenizerMismatchError",
  "check_units",
  "export_full",
  "export_predictor",
  "export_pruned",
  "from_run",
  "select_units",
  "pretrained_source",
  "smollm2_source",
  "verify_tokenizer",
]
