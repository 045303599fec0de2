"""Data for IFPruning training and eval (host-local numpy; TFDS array_record + Grain).

  tokenization.py  `load_tokenizer(spec)`: bytes / smollm2 (GGUF) / hf:PATH / spm:PATH; ChatML
  skills.py        built-in 14-skill, 3-domain instruction suite, `exact_match`
  sources.py       raw inputs: files, folders, globs, archives, JSONL, reasoning-gym
  builders.py      each source as a content-hashed TFDS dataset (`materialize`)
  batch.py         the batch layout (`FIELDS`: names, shapes, dtypes, pad values), `Batch`
  packing.py       CPT packing + chunk -> mask routing
  sft.py           SFT formatting (loss on assistant output only), truncation
  pipeline.py      `default_data_config()`, `build_iterator(...)`
Modules are imported explicitly (no re-exports here) so that importing one stays light.
"""
