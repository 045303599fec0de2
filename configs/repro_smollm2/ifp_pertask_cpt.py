"""Regime (a), IFP per task on the CPT documents themselves: as ifp_frozen (GRIFFIN-distilled,
centred head, trunk frozen, kernel LR 5e-3, 40 CPT steps with chunk routing), but every
predictor input reads its domain's task sentence (`ifp_jax/evals/domains.py DOMAIN_TASKS`,
text source option `task`) instead of chunk 1, and its mask serves chunk 2, as in scoring.

Why: ifp_pertask_frozen trains on SFT records (the chat template, then a document's first 200
tokens) while the scoring, and every CPT run, use the middle of a document; on code its
per-task mask ended worse than its own mean mask. Here only what the predictor reads differs
from the shared table's training. The config argument is the benchmark's train_docs.jsonl;
its folder holds the per-domain files train_docs_<domain>.jsonl, one source each.
"""

import pathlib

from configs.repro_smollm2.ifp_frozen import get_config as frozen_config
from ifp_jax.data.pipeline import source_config
from ifp_jax.evals.domains import DOMAIN_TASKS


def get_config(train_jsonl: str = ""):
  c = frozen_config(train_jsonl)
  folder = pathlib.Path(train_jsonl).parent
  sources = {
    d: source_config("text", [str(f)], text_field="text", eval_fraction=0.0, task=task)
    for d, task in DOMAIN_TASKS.items()
    if (f := folder / f"train_docs_{d}.jsonl").is_file()
  }
  if not sources:
    raise ValueError(f"no train_docs_<domain>.jsonl next to {train_jsonl}")
  c.data.cpt.sources = sources
  return c
