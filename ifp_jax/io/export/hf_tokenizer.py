"""HF tokenizer files (`tokenizer.json` + `tokenizer_config.json` with the chat template) for an
exported directory, and a check that transformers' `AutoTokenizer` reproduces our ids.

Per tokenizer spec of a run:
  bytes         an equivalent byte-level `tokenizers` model: byte b -> id b (GPT-2 byte alphabet,
                no merges, no regex split), the 4 special tokens as added tokens 256..259, and a
                ChatML template without a default system prompt.
  smollm2, gguf:PATH   rebuilt from the GGUF (`gguf_io.write_hf_tokenizer_files`).
  hf:PATH       the source's own tokenizer files, copied.
  spm:PATH      not supported: no faithful SentencePiece -> tokenizer.json conversion here.

`verify_tokenizer` loads the written files with `AutoTokenizer` and compares ids with ours on
probe texts (instructions, chat turns, special tokens, Unicode); any difference is a
`TokenizerMismatchError` naming the text and the first differing position.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Sequence

from ifp_jax.data.tokenization import ByteTokenizer, Tokenizer
from ifp_jax.io.export.writer import ExportError, is_writer

# ChatML exactly as `Tokenizer.apply_chat_template` renders it (no default system prompt).
CHATML_TEMPLATE = (
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
  "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
HF_TOKENIZER_FILES = (
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "chat_template.jinja",
  "tokenizer.model",  # copied along from an hf: source when present
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
)
PROBE_TEXTS = (
  "Sort the list of numbers in ascending order.",
  "  leading spaces, tabs\tand\nnew lines\n\n",
  "Unicode: héllo wörld, 中文, emoji 😀👍🏽, math ∑ x² ≤ π",
  "def f(x):\n    return x ** 2  # code\n",
  "12345 + 67890 = 80235; 3.14159",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
  "<|endoftext|>text after end of text",
)


class TokenizerMismatchError(ExportError):
  """The exported HF tokenizer does not give the ids the model was trained with."""


def write_byte_tokenizer(out_dir: pathlib.Path, max_length: int) -> None:
  from tokenizers import AddedToken, decoders, models, pre_tokenizers
  from tokenizers import Tokenizer as HFTok

  from ifp_jax.io.gguf import _bytes_to_unicode  # noqa: PLC2701 - GPT-2's byte alphabet

  ours = ByteTokenizer()
  alphabet = _bytes_to_unicode()
  tok = HFTok(models.BPE(vocab={alphabet[b]: b for b in range(256)}, merges=[], fuse_unk=False))
  # One token per UTF-8 byte: no regex split (it would not change ids, but keep it literal).
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in ours.SPECIALS])
  for s in ours.SPECIALS:  # added tokens take the next free ids, in order: check, don't assume
    if tok.token_to_id(s) != ours.token_to_id(s):
      raise TokenizerMismatchError(
        f"byte tokenizer: {s!r} got id {tok.token_to_id(s)}, expected {ours.token_to_id(s)}"
      )
  tok.save(str(out_dir / "tokenizer.json"))
  config = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|pad|>",
    "add_bos_token": False,
    "add_eos_token": False,
    "add_prefix_space": False,
    "clean_up_tokenization_spaces": False,
    "model_max_length": max_length,
    "chat_template": CHATML_TEMPLATE,
  }
  (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_tokenizer_files(spec: str, out_dir: pathlib.Path, max_length: int) -> None:
  """Writes the HF tokenizer files of tokenizer `spec` (see module doc) into `out_dir`."""
  if not is_writer():
    return
  kind, _, arg = spec.partition(":")
  if spec == "bytes":
    write_byte_tokenizer(out_dir, max_length)
  elif kind in ("smollm2", "gguf"):
    from ifp_jax.io import gguf as gguf_io

    path = gguf_io.find_smollm2_gguf() if kind == "smollm2" else pathlib.Path(arg)
    gguf_io.write_hf_tokenizer_files(path, out_dir)
  elif kind == "hf" and arg:
    src = pathlib.Path(arg).expanduser()
    src_dir = src if src.is_dir() else src.parent
    if not (src_dir / "tokenizer.json").is_file():
      raise ExportError(f"tokenizer {spec!r}: {src_dir / 'tokenizer.json'} not found")
    for name in HF_TOKENIZER_FILES:
      if (src_dir / name).is_file():
        shutil.copyfile(src_dir / name, out_dir / name)
  elif kind == "spm":
    raise ExportError(
      f"tokenizer {spec!r}: SentencePiece tokenizers cannot be exported as an HF tokenizer.json "
      "by ifp_jax (no exact conversion); export with --tokenizer=hf:DIR pointing at an "
      "equivalent HF tokenizer (its ids are checked against the run's)"
    )
  else:
    raise ExportError(f"tokenizer {spec!r}: cannot write HF tokenizer files for this spec")
  for f in out_dir.iterdir():
    if f.name in HF_TOKENIZER_FILES:
      f.chmod(0o644)


def verify_tokenizer(
  hf_dir: pathlib.Path, ours: Tokenizer, vocab_size: int, texts: Sequence[str] = ()
) -> None:
  """AutoTokenizer(hf_dir) must encode `texts` + probes and render chats exactly like `ours`."""
  from transformers import AutoTokenizer

  try:
    hf = AutoTokenizer.from_pretrained(str(hf_dir))
  except Exception as e:  # noqa: BLE001 - any load failure is a broken export
    raise TokenizerMismatchError(
      f"{hf_dir}: transformers AutoTokenizer cannot load the exported "
      f"tokenizer files ({type(e).__name__}: {e})"
    ) from e
  if len(hf) > vocab_size:
    raise TokenizerMismatchError(
      f"{hf_dir}: the tokenizer has {len(hf)} ids but the model's vocab_size is {vocab_size}"
    )
  probes = list(texts) + list(PROBE_TEXTS)
  chat = [{"role": "user", "content": probes[0]}]
  probes.append(ours.apply_chat_template(chat, add_generation_prompt=True))
  for text in probes:
    want = list(ours.encode(text))
    got = list(hf(text, add_special_tokens=False)["input_ids"])
    if got != want:
      pairs = enumerate(zip(got, want, strict=False))
      at = next((i for i, (a, b) in pairs if a != b), min(len(got), len(want)))
      raise TokenizerMismatchError(
        f"{hf_dir}/tokenizer.json gives different ids than the run's tokenizer "
        f"{getattr(ours, 'name', ours)!r} on {text[:60]!r}: first difference at token {at} "
        f"(exported {got[at : at + 4]} vs run {want[at : at + 4]}; lengths {len(got)} vs "
        f"{len(want)})"
      )
  if getattr(hf, "chat_template", None):
    rendered = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    expected = ours.apply_chat_template(chat, add_generation_prompt=True)
    if rendered != expected:
      raise TokenizerMismatchError(
        f"{hf_dir}: the exported chat template renders {rendered!r}, "
        f"the run's chat format gives {expected!r}"
      )
  for what, hf_id, our_id in (
    ("eos", hf.eos_token_id, ours.eos_id),
    ("pad", hf.pad_token_id, ours.pad_id),
  ):
    if hf_id is not None and hf_id != our_id and hf_id not in ours.stop_ids:
      raise TokenizerMismatchError(f"{hf_dir}: {what}_token id {hf_id} != the run's {our_id}")
