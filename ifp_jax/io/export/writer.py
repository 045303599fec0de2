"""Atomic export directories and leaf-by-leaf safetensors writing for large models.

* `atomic_dir(out, overwrite)`: everything is written into a sibling `OUT.tmp-XXXX` and renamed
  to OUT only once complete, so an interrupted export never leaves a directory at OUT that looks
  finished (a killed process leaves only the `.tmp-` folder behind, which no loader reads).
* `write_llama_weights(cfg, params, dir)`: gathers one parameter leaf at a time to the host
  (`jax.device_get`, or `process_allgather` for shards other processes hold), splits the
  scanned `layers` axis into HF per-layer tensors and streams them into shards of at most
  `max_shard_bytes`, with a progress bar. The whole model is never replicated on one host:
  peak host memory is one leaf plus one shard. Every process must call it (the gathers are
  collective); only process 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from ifp_jax.io import hf as hf_io
from ifp_jax.model.config import LlamaConfig

DTYPES = ("float32", "bfloat16")
DEFAULT_SHARD_BYTES = 2 * 1024**3
# Written last: a directory holding it is a complete export (the rename is the real commit;
# the marker lets tools check a directory they did not see being renamed).
COMPLETE_MARKER = "export_info.json"


class ExportError(ValueError):
  """A user-facing problem with an export request (bad flags, paths or inputs)."""


def is_writer() -> bool:
  return jax.process_index() == 0


def check_out(out: str | os.PathLike, overwrite: bool) -> pathlib.Path:
  """Refuses an existing non-empty OUT unless `overwrite` (checked before any work is done)."""
  out = pathlib.Path(out).expanduser().absolute()
  if out.exists() and not out.is_dir():
    raise ExportError(f"--out={out} exists and is not a directory")
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise ExportError(
      f"--out={out} exists and is not empty; pass --overwrite to replace it, or "
      "choose another directory"
    )
  return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[pathlib.Path]:
  """Yields a fresh temporary directory next to OUT; on success it replaces OUT.

  On any exception (or KeyboardInterrupt) the temporary directory is removed and an existing
  OUT is left untouched. Only process 0 touches the file system; others get a path they must
  not write to (every writer in this package checks `is_writer()`).
  """
  if not is_writer():  # process 0 alone checks and writes
    yield pathlib.Path(out).with_name(pathlib.Path(out).name + ".tmp-nonwriter")
    return
  out = check_out(out, overwrite)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
  try:
    yield tmp
    tmp.chmod(0o755)  # mkdtemp makes 0700; an export is meant to be shared
    if out.exists():
      old = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".old-", dir=out.parent))
      old.rmdir()
      out.rename(old)
      tmp.rename(out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      tmp.rename(out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


_NUMBER_LIST = re.compile(r"\[\s*(-?\d[\d.eE+-]*(?:,\s*-?\d[\d.eE+-]*)*)\s*\]")


def write_json(path: pathlib.Path, obj: Any) -> None:
  """Indented JSON with lists of numbers (e.g. kept units) kept on one line each."""
  if is_writer():
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    text = _NUMBER_LIST.sub(
      lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text
    )
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o644)


def host_array(x: Any) -> np.ndarray:
  """One leaf on the host: a plain fetch, or an all-gather when other processes hold shards."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def llama_tensors(cfg: LlamaConfig, params: Mapping[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, float32 [out, in] tensor), one parameter leaf gathered at a time.

  The name/layout table is `hf_io`'s (the import's exact inverse); leaves are visited leaf-major
  so a stacked [layers, ...] leaf is fetched once, not once per layer.
  """
  per_layer, globals_ = hf_io._rule(cfg)  # noqa: SLF001 - the one source of HF layouts
  for name, path, _, to_hf in globals_:
    yield name, np.ascontiguousarray(to_hf(host_array(_get(params, path)).astype(np.float32)))
  for suffix, path, _, to_hf in per_layer:
    stacked = host_array(_get(params, ("layers",) + path)).astype(np.float32)
    for i in range(cfg.num_hidden_layers):
      yield f"model.layers.{i}.{suffix}", np.ascontiguousarray(to_hf(stacked[i]))
    del stacked


def param_bytes(tree: Any, dtype: str) -> int:
  itemsize = 2 if dtype == "bfloat16" else 4
  return sum(int(np.prod(np.shape(x))) * itemsize for x in jax.tree.leaves(tree))


class ShardedSafetensors:
  """Streams tensors into `model-0000i-of-0000n.safetensors` (+ index) or `model.safetensors`.

  Shards are written under provisional names and renamed once their count is known.
  """

  def __init__(
    self,
    out_dir: pathlib.Path,
    dtype: str = "float32",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    prefix: str = "model",
    progress: Callable[[int], None] | None = None,
  ):
    if dtype not in DTYPES:
      raise ExportError(f"export dtype {dtype!r}: expected one of {DTYPES}")
    if max_shard_bytes <= 0:
      raise ExportError(f"max_shard_bytes={max_shard_bytes} must be > 0")
    self.out_dir, self.dtype, self.max_bytes, self.prefix = out_dir, dtype, max_shard_bytes, prefix
    self.progress = progress
    self.itemsize = 2 if dtype == "bfloat16" else 4
    self._buffer: dict[str, np.ndarray] = {}
    self._buffer_bytes = 0
    self._shards: list[tuple[pathlib.Path, list[str]]] = []
    self.total_bytes = 0

  def add(self, name: str, tensor: np.ndarray) -> None:
    nbytes = tensor.size * self.itemsize
    if self._buffer and self._buffer_bytes + nbytes > self.max_bytes:
      self._flush()
    self._buffer[name] = tensor
    self._buffer_bytes += nbytes
    self.total_bytes += nbytes
    if self.progress:
      self.progress(nbytes)

  def _flush(self) -> None:
    if not self._buffer:
      return
    file = self.out_dir / f"{self.prefix}.part{len(self._shards):05d}"
    if is_writer():
      save_safetensors(file, self._buffer, self.dtype)
    self._shards.append((file, list(self._buffer)))
    self._buffer, self._buffer_bytes = {}, 0

  def finish(self) -> list[str]:
    """Writes the last shard and the index; returns the file names."""
    self._flush()
    n = len(self._shards)
    names = (
      [f"{self.prefix}.safetensors"]
      if n == 1
      else [f"{self.prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    weight_map = {}
    for (file, keys), name in zip(self._shards, names, strict=True):
      if is_writer():
        file.rename(self.out_dir / name)
      weight_map.update({k: name for k in keys})
    if n > 1:
      write_json(
        self.out_dir / f"{self.prefix}.safetensors.index.json",
        {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map},
      )
    return names


def save_safetensors(file: pathlib.Path, tensors: Mapping[str, np.ndarray], dtype: str) -> None:
  """float32 through numpy; bfloat16 through torch (numpy has no bf16). Mode 0644."""
  if dtype == "float32":
    from safetensors.numpy import save_file

    save_file(
      {k: np.asarray(v, np.float32) for k, v in tensors.items()},
      str(file),
      metadata={"format": "pt"},
    )
  elif dtype == "bfloat16":
    import torch
    from safetensors.torch import save_file

    save_file(
      {
        k: torch.from_numpy(np.asarray(v, np.float32)).to(torch.bfloat16)
        for k, v in tensors.items()
      },
      str(file),
      metadata={"format": "pt"},
    )
  else:
    raise ExportError(f"export dtype {dtype!r}: expected one of {DTYPES}")
  file.chmod(0o644)


def progress_bar(total_bytes: int, desc: str):
  """A tqdm byte counter on process 0 (silent elsewhere); returns (update_fn, close_fn)."""
  from tqdm.auto import tqdm

  bar = tqdm(
    total=total_bytes,
    desc=desc,
    unit="B",
    unit_scale=True,
    unit_divisor=1024,
    disable=not is_writer(),
    leave=False,
  )
  return bar.update, bar.close


def write_llama_weights(
  cfg: LlamaConfig,
  params: Mapping[str, Any],
  out_dir: pathlib.Path,
  *,
  dtype: str = "float32",
  max_shard_bytes: int = DEFAULT_SHARD_BYTES,
  desc: str = "weights",
  on_tensor: Callable[[str], None] | None = None,
) -> list[str]:
  """Decoder params (our tree) -> HF safetensors shards in `out_dir`. Returns the file names.

  `on_tensor(name)` is called after each tensor is queued (progress hooks, tests).
  """
  update, close = progress_bar(param_bytes(params, dtype), desc)
  writer = ShardedSafetensors(out_dir, dtype, max_shard_bytes, progress=update)
  try:
    for name, tensor in llama_tensors(cfg, params):
      writer.add(name, tensor)
      if on_tensor:
        on_tensor(name)
    return writer.finish()
  finally:
    close()


def write_llama_config(
  cfg: LlamaConfig,
  out_dir: pathlib.Path,
  dtype: str,
  tokenizer: Any | None = None,
  architecture: str | None = None,
  special_ids: Mapping[str, Any] | None = None,
) -> None:
  """config.json (+ generation_config.json with the tokenizer's stop / pad ids).

  `special_ids` {bos, eos, pad} (a converted checkpoint's own ids) override the tokenizer's.
  """
  hf = cfg.to_hf_dict(torch_dtype=dtype)
  if architecture is not None:  # default: the config's own (Llama / Qwen2 / Qwen3)
    hf["architectures"] = [architecture]
  hf["dtype"] = dtype  # transformers >= 5 reads `dtype`; `torch_dtype` kept for older readers
  gen: dict[str, Any] = {"do_sample": False}
  if tokenizer is not None:
    hf.update(
      bos_token_id=tokenizer.bos_id,
      eos_token_id=list(tokenizer.stop_ids),
      pad_token_id=tokenizer.pad_id,
    )
    gen.update(
      bos_token_id=tokenizer.bos_id,
      eos_token_id=list(tokenizer.stop_ids),
      pad_token_id=tokenizer.pad_id,
    )
  if special_ids:
    ids = {f"{k}_token_id": v for k, v in special_ids.items()}
    hf.update(ids)
    gen.update(ids)
  write_json(out_dir / "config.json", hf)
  if architecture is None:
    write_json(out_dir / "generation_config.json", gen)


def write_hf_model(
  cfg: LlamaConfig,
  params: Mapping[str, Any],
  out: str | os.PathLike,
  *,
  dtype: str = "float32",
  max_shard_bytes: int = DEFAULT_SHARD_BYTES,
  overwrite: bool = False,
  special_ids: Mapping[str, Any] | None = None,
  tokenizer_spec: str | None = None,
) -> pathlib.Path:
  """Decoder params -> a complete HF directory at `out`, atomically (the one HF writer for
  launch.convert and tests; launch.export adds the IFP parts around the same pieces).

  `tokenizer_spec` (a load_tokenizer spec) writes its HF tokenizer files alongside.
  """
  from ifp_jax.io.export import hf_tokenizer  # imports this module

  out = check_out(out, overwrite)
  with atomic_dir(out, overwrite) as tmp:
    if tokenizer_spec is not None and is_writer():
      hf_tokenizer.write_tokenizer_files(tokenizer_spec, tmp, cfg.max_position_embeddings)
    write_llama_weights(
      cfg, params, tmp, dtype=dtype, max_shard_bytes=max_shard_bytes, desc=out.name
    )
    write_llama_config(cfg, tmp, dtype, special_ids=special_ids)
  return out
