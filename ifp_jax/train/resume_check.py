"""Resume safety: the job's resolved config against the config saved in the checkpoint's meta.

A resumed run must train the model the checkpoint holds, with the state meaning what it meant.
Fields that cannot change that (logging and checkpoint cadence, eval size, mesh, the data cache
dir, divergence guards) may differ freely; any other difference (architecture, `model.k`,
`model.mask_kind`, tokenizer, data, schedules, steps, ...) is refused naming the fields, unless
listed in `train.allow_config_change` ("cpt.steps,sft" allows cpt.steps and every sft.* field).
"""

from __future__ import annotations

from typing import Any, Iterable

from ifp_jax.train.checkpointing import CheckpointError

# Fields (or prefixes) that never change the model or the meaning of the state.
HARMLESS = (
  "mesh",
  "data.data_dir",
  "train.log_every",
  "train.checkpoint_every",
  "train.keep_checkpoints",
  "train.async_checkpoint",
  "train.eval_rows",
  "train.eval_every",
  "train.divergence_max_loss",
  "train.divergence_max_grad_norm",
  "train.divergence_dead_checks",
  "train.save_diverged",
  "train.allow_config_change",
)


class ConfigMismatchError(CheckpointError):
  """The checkpoint was written by a job with another model/state meaning (one line)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'a.b.c': leaf} of nested dicts; lists/tuples are leaves (compared as lists)."""
  if isinstance(tree, dict):
    out: dict[str, Any] = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _covered(field: str, entries: Iterable[str]) -> bool:
  return any(field == e or field.startswith(e + ".") for e in entries if e)


def differences(
  saved: dict, current: dict, defaults: dict | None = None, allowed: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
  """(field, saved value, current value) for every refused difference. A field the saved
  config lacks (written before the field existed) counts only if it is not at its default."""
  a, b = flatten(saved), flatten(current)
  d = flatten(defaults or {})
  missing = object()
  out = []
  for field in sorted(set(a) | set(b)):
    old, new = a.get(field, missing), b.get(field, missing)
    if old is missing and field in d and d[field] == new:
      continue
    if old == new or _covered(field, HARMLESS) or _covered(field, allowed):
      continue
    out.append(
      (field, "<absent>" if old is missing else old, "<absent>" if new is missing else new)
    )
  return out


def check_resume(
  saved: dict, current: dict, step: int, allowed: str = "", defaults: dict | None = None
) -> None:
  """Raises ConfigMismatchError naming every refused field and how to allow it."""
  entries = [x.strip() for x in str(allowed or "").split(",") if x.strip()]
  diffs = differences(saved, current, defaults, entries)
  if not diffs:
    return
  shown = "; ".join(f"{f}: {_short(o)} -> {_short(n)}" for f, o, n in diffs[:8])
  more = f" (+{len(diffs) - 8} more)" if len(diffs) > 8 else ""
  fields = ",".join(f for f, _, _ in diffs)
  raise ConfigMismatchError(
    f"refusing to resume from checkpoint step {step}: the config differs in {shown}{more}; "
    f"if intended, pass --config.train.allow_config_change={fields} (or use a new --workdir)"
  )


def _short(v: Any) -> str:
  text = repr(v)
  return text if len(text) <= 60 else text[:57] + "..."
