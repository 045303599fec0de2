"""Fail fast on shapes the mesh cannot split, naming the config field, before anything compiles.

Parameters and activations are sharded by logical axis (ifp_jax/train/sharding.py LOGICAL_RULES):
heads, kv_heads, mlp (d_ff) and vocab over `tensor`, embed over `fsdp`, batch over
(`data`, `fsdp`). `sharding._fit_spec` would silently replicate a dim a mesh axis does not
divide, which costs memory and communication instead of failing; `validate` turns that into an
error that says which field to change, e.g.

  model.llm.num_attention_heads=6 is not divisible by mesh tensor=4

Checked (E = error, W = warning; "llm" and "predictor" both):
  E  num_attention_heads, intermediate_size (d_ff), vocab_size        vs tensor
  E  model.k (width of the gathered, pruned FFN at inference)           vs tensor
  W  num_key_value_heads vs tensor (GQA K/V projections are replicated over tensor when
     tensor > kv heads and divisible by them: the usual practice; otherwise E)
  E  hidden_size (embed)                                                vs fsdp
  E  train.batch_size vs data*fsdp, vs the process count, and data*fsdp vs the process count
     (each process must own whole batch shards: it feeds its own rows)
  E  train.seq_len vs data.num_chunks (CPT rows are cut into num_chunks chunks)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import jax

from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.ifp_model import IFPConfig
from ifp_jax.train import optim, warm_start
from ifp_jax.train.sharding import MESH_AXES, resolve_mesh_shape

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Problem:
  field: str  # the config field to change, e.g. "model.llm.num_key_value_heads"
  message: str
  error: bool = True

  def __str__(self) -> str:
    return self.message


class ConfigValidationError(ValueError):
  """Raised by `validate`; `.problems` lists every error found (not only the first)."""

  def __init__(self, problems: list[Problem]):
    self.problems = problems
    super().__init__("config does not fit the mesh:\n  " + "\n  ".join(p.message for p in problems))


def mesh_sizes(mesh: Any, num_devices: int | None = None) -> dict[str, int]:
  """{'data', 'fsdp', 'tensor'} sizes of a Mesh, or of a shape (one -1 needs `num_devices`)."""
  if hasattr(mesh, "shape") and hasattr(mesh, "axis_names"):
    return {a: int(mesh.shape[a]) for a in MESH_AXES}
  shape = tuple(int(s) for s in mesh)
  if -1 in shape:
    if num_devices is None:
      raise ValueError(f"mesh shape {shape} has a -1 entry: pass num_devices")
    shape = resolve_mesh_shape(shape, num_devices)
  elif num_devices is not None:
    shape = resolve_mesh_shape(shape, num_devices)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  return dict(zip(MESH_AXES, shape, strict=True))


def _divides(
  problems: list[Problem],
  field: str,
  value: int,
  axes: Sequence[str],
  sizes: dict[str, int],
  note: str = "",
  error: bool = True,
) -> None:
  size = math.prod(sizes[a] for a in axes)
  if size > 1 and value % size:
    axis = "*".join(axes)
    msg = f"{field}={value} is not divisible by mesh {axis}={size}"
    problems.append(Problem(field, msg + (f" ({note})" if note else ""), error))


def _decoder_fields(config, which: str) -> tuple[str, str]:
  """(prefix of the fields that set this decoder's shape, note on where they come from)."""
  m = config.model
  if which == "llm":
    note = f"shape from model.init_from={m.init_from!r}" if m.init_from else ""
    return "model.llm", note
  if m.get("predictor_init_from", ""):
    return "model.predictor", f"shape from model.predictor_init_from={m.predictor_init_from!r}"
  if int(m.predictor_init_layers) > 0:
    src = f"model.init_from={m.init_from!r}" if m.init_from else "model.llm"
    return "model.llm", f"predictor = first model.predictor_init_layers LLM layers, from {src}"
  return "model.predictor", ""


def _check_decoder(
  problems: list[Problem],
  cfg: LlamaConfig,
  prefix: str,
  note: str,
  sizes: dict[str, int],
  vocab: bool = True,
) -> None:
  t = sizes["tensor"]
  _divides(
    problems, f"{prefix}.num_attention_heads", cfg.num_attention_heads, ["tensor"], sizes, note
  )
  kv = cfg.num_key_value_heads
  if t > 1 and kv % t:
    replicable = t % kv == 0
    _divides(
      problems,
      f"{prefix}.num_key_value_heads",
      kv,
      ["tensor"],
      sizes,
      ", ".join(
        x for x in [note, "K/V projections replicated over tensor" if replicable else ""] if x
      ),
      error=not replicable,
    )
  _divides(problems, f"{prefix}.intermediate_size", cfg.intermediate_size, ["tensor"], sizes, note)
  if vocab:
    _divides(problems, f"{prefix}.vocab_size", cfg.vocab_size, ["tensor"], sizes, note)
  _divides(problems, f"{prefix}.hidden_size", cfg.hidden_size, ["fsdp"], sizes, note)


def check(
  config,
  ifp: IFPConfig,
  mesh: Any,
  *,
  num_devices: int | None = None,
  process_count: int | None = None,
) -> list[Problem]:
  """Every problem found (errors and warnings); see `validate` for the arguments."""
  sizes = mesh_sizes(mesh, num_devices)
  processes = jax.process_count() if process_count is None else int(process_count)
  problems: list[Problem] = []
  prefix, note = _decoder_fields(config, "llm")
  _check_decoder(problems, ifp.llm, prefix, note, sizes)
  if ifp.predictor is not None:
    prefix, note = _decoder_fields(config, "predictor")
    pred: list[Problem] = []
    # A predictor of the LLM's vocab shares its check; its own vocab is checked here.
    own_vocab = ifp.predictor.vocab_size != ifp.llm.vocab_size
    _check_decoder(pred, ifp.predictor, prefix, note, sizes, vocab=own_vocab)
    known = {p.field for p in problems}
    problems += [p for p in pred if p.field not in known]  # predictor = LLM layers: say it once
  if ifp.has_masks:
    _divides(
      problems,
      "model.k",
      ifp.k,
      ["tensor"],
      sizes,
      "the gathered pruned FFN has k units, sharded over tensor",
    )
  batch = int(config.train.batch_size)
  _divides(problems, "train.batch_size", batch, ["data", "fsdp"], sizes)
  shards = sizes["data"] * sizes["fsdp"]
  if processes > 1:
    if batch % processes:
      problems.append(
        Problem(
          "train.batch_size",
          f"train.batch_size={batch} is not divisible "
          f"by the process count {processes} (each process reads "
          f"batch_size / processes rows)",
        )
      )
    if shards % processes:
      problems.append(
        Problem(
          "mesh",
          f"mesh data*fsdp={shards} is not divisible by the process "
          f"count {processes}: each process must own whole batch shards "
          f"(put more devices on data/fsdp, fewer on tensor)",
        )
      )
  problems += check_values(config, ifp)
  chunks = int(config.data.num_chunks)
  seq_len = int(config.train.seq_len)
  if int(config.cpt.steps) > 0 and (chunks < 2 or seq_len % chunks):
    problems.append(
      Problem(
        "data.num_chunks",
        f"train.seq_len={seq_len} is not divisible by "
        f"data.num_chunks={chunks} (must be >= 2: CPT rows are cut into "
        f"num_chunks chunks)",
      )
    )
  return problems


def check_values(config, ifp: IFPConfig) -> list[Problem]:
  """Counts, intervals and lengths that must be positive / in range (checked before compiling:
  e.g. train.log_every=0 would otherwise be a ZeroDivisionError after the first step)."""
  problems: list[Problem] = []

  def need(field: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
      problems.append(Problem(field, f"{field}={value!r} must be {what}"))

  t = config.train
  for stage in ("cpt", "sft"):
    steps = config[stage].steps
    need(f"{stage}.steps", steps, int(steps) >= 0, ">= 0 (0 skips the stage)")
    for key in ("llm_lr", "predictor_lr", "predictor_bias_lr"):
      if key not in config[stage]:
        continue
      v = float(config[stage][key])
      need(f"{stage}.{key}", v, math.isfinite(v) and v >= 0, "a finite number >= 0")
    need(
      f"{stage}.warmup_steps", config[stage].warmup_steps, config[stage].warmup_steps >= 0, ">= 0"
    )
  for key in ("log_every", "checkpoint_every", "keep_checkpoints", "batch_size", "seq_len"):
    need(f"train.{key}", t[key], int(t[key]) >= 1, ">= 1")
  need("train.eval_rows", t.eval_rows, int(t.eval_rows) >= 0, ">= 0")
  need("train.eval_every", t.eval_every, int(t.eval_every) >= 0, ">= 0")
  for key in ("divergence_max_loss", "divergence_max_grad_norm", "divergence_dead_checks"):
    if key in t:
      v = float(t[key])
      need(f"train.{key}", t[key], math.isfinite(v) and v >= 0, "a finite number >= 0 (0 = off)")
  pack = config.data.get("sft_pack", 1)
  need("data.sft_pack", pack, int(pack) >= 1, ">= 1 (conversations per SFT row; 1 = unpacked)")
  warm = t.get("warm_start", "")
  if warm:
    need(
      "train.warm_start", warm, warm in warm_start.WARM_STARTS, f"one of {warm_start.WARM_STARTS}"
    )
    need(
      "model.init_from",
      config.model.init_from,
      bool(config.model.init_from),
      "set: train.warm_start scores units with the pretrained LLM",
    )
    need(
      "model.mask_kind",
      ifp.mask_kind,
      ifp.mask_kind != "none",
      "one with masks for train.warm_start",
    )
    if warm == "griffin":
      need(
        "model.mask_kind",
        ifp.mask_kind,
        ifp.uses_predictor,
        "a predictor kind for train.warm_start='griffin' (it distils into the predictor head)",
      )
      need(
        "model.predictor_init_layers",
        config.model.predictor_init_layers,
        int(config.model.predictor_init_layers) >= 1
        or bool(config.model.get("predictor_init_from", "")),
        ">= 1 (or model.predictor_init_from set) for train.warm_start='griffin' (the head is "
        "fitted to a pretrained backbone)",
      )
    need("train.warm_start_rows", t.warm_start_rows, int(t.warm_start_rows) >= 1, ">= 1")
    v = float(t.warm_start_scale)
    need("train.warm_start_scale", v, math.isfinite(v) and v > 0, "a finite number > 0")
  frozen = [x for x in str(t.freeze).split(",") if x]
  for name in frozen:
    need("train.freeze", t.freeze, name in optim.FREEZABLE, f"a comma list of {optim.FREEZABLE}")
  if "predictor_trunk" in frozen:
    need(
      "train.freeze",
      t.freeze,
      ifp.uses_predictor,
      "no 'predictor_trunk' unless model.mask_kind is a predictor kind",
    )
  if ifp.head.center:
    need(
      "model.head_center",
      True,
      warm == "griffin" and ifp.uses_predictor,
      "False unless train.warm_start='griffin' on a predictor kind (that start sets the centre; "
      "otherwise it stays 0 and changes nothing)",
    )
  if int(t.seq_len) > ifp.llm.max_position_embeddings:
    problems.append(
      Problem(
        "train.seq_len",
        f"train.seq_len={t.seq_len} exceeds the LLM's max_position_embeddings="
        f"{ifp.llm.max_position_embeddings} (model.llm.max_position_embeddings or the checkpoint)",
      )
    )
  if ifp.mask_kind != "none" and not 0 < int(ifp.k) <= ifp.llm.intermediate_size:
    problems.append(
      Problem(
        "model.k",
        f"model.k={ifp.k} must be in 1..{ifp.llm.intermediate_size} (the FFN width)",
      )
    )
  return problems


def validate(
  config,
  ifp: IFPConfig,
  mesh: Any,
  *,
  num_devices: int | None = None,
  process_count: int | None = None,
) -> list[Problem]:
  """Raises ConfigValidationError naming every indivisible field; logs and returns warnings.

  `config`: the job's ConfigDict (ifp_jax/train/config.py schema); `ifp`: the resolved IFPConfig;
  `mesh`: a jax Mesh or a (data, fsdp, tensor) shape (a -1 entry needs `num_devices`);
  `process_count`: default jax.process_count().
  """
  problems = check(config, ifp, mesh, num_devices=num_devices, process_count=process_count)
  errors = [p for p in problems if p.error]
  if errors:
    raise ConfigValidationError(errors)
  warnings = [p for p in problems if not p.error]
  for p in warnings:
    log.warning("config/mesh: %s", p.message)
  return warnings
