"""Compile the train step for a target mesh without allocating a single weight; report memory.

The state is abstract (`state_init.abstract_state`: ShapeDtypeStructs carrying the target
NamedShardings) and so is the batch, so `jax.jit(step).lower(...).compile()` runs the SPMD
partitioner and XLA's buffer assignment for the real shapes on any host. On CPU, N fake devices
(`--xla_force_host_platform_device_count=N`) stand in for the accelerators, one process per
device count (launch/compile_check.py spawns them).

Reported per device: parameter and optimizer-state bytes (exact: shard shapes of the abstract
state), and XLA's `memory_analysis()` of the compiled step: arguments (state + batch), outputs,
aliased (donated) bytes and temporaries (activations, gradients, workspace). XLA:CPU makes
other fusion and layout choices than XLA:GPU/TPU (and may compute bf16 dots in f32), so the
temporaries are an estimate of the accelerator's; the state bytes are exact. FLOPs are not
reported: XLA's `cost_analysis()` counts a while-loop body once, missing the layer scan.

The layer scan stays rolled here (scan_unroll = 1, what accelerators run): nothing executes,
so the XLA:CPU in-loop collective deadlock that `sharding.cpu_safe_unroll` avoids cannot occur.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

from ifp_jax.data import batch as batch_layout
from ifp_jax.data.pipeline import predictor_input_len
from ifp_jax.train import sharding, validate
from ifp_jax.train.state import BATCH_NDIMS, abstract_state, compile_steps

GIB = 1024**3


@dataclasses.dataclass
class Report:
  """Per-device bytes of one compiled train step (see the module docstring)."""

  devices: int
  mesh: dict[str, int]
  stage: str
  batch_size: int
  seq_len: int
  dtype: str
  remat: str
  params_total: int  # parameter count (LLM + predictor + multipliers)
  llm_params: int
  predictor_params: int
  param_bytes: int  # per device
  opt_bytes: int  # per device (Adam moments, counts)
  replicated_param_bytes: int  # per device: parameters no mesh axis splits (held in full)
  argument_bytes: int  # per device: state + batch
  output_bytes: int
  alias_bytes: int  # outputs written into donated arguments
  temp_bytes: int  # activations, gradients, workspace
  compile_seconds: float

  @property
  def peak_bytes(self) -> int:
    """Arguments + outputs not aliased to donated arguments + temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}


def shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    total += math.prod(shape) * jnp.dtype(x.dtype).itemsize
  return total


def replicated_bytes(tree: Any) -> int:
  """Bytes of the leaves every device holds in full although the mesh has several devices."""
  total = 0
  for x in jax.tree.leaves(tree):
    if x.sharding is not None and x.sharding.num_devices > 1 and x.sharding.is_fully_replicated:
      total += math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
  return total


def count(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def abstract_batch(
  config, stage: str, mesh, own_predictor_tokenizer: bool = False
) -> dict[str, jax.ShapeDtypeStruct]:
  """The trainer's global batch for `stage` as ShapeDtypeStructs (ifp_jax/data/batch.py)."""
  b, t = int(config.train.batch_size), int(config.train.seq_len)
  if stage == "cpt":
    c = int(config.data.num_chunks) - 1
    replay = False
  elif stage == "sft":
    c = int(config.data.get("sft_pack", 1))
    sources = config.data.sft.sources
    sources = sources.values() if hasattr(sources, "values") else sources
    replay = any(src["kind"] == "text" for src in sources)  # CPT replay: P of both rows
  else:
    raise ValueError(f"stage must be 'cpt' or 'sft', got {stage!r}")
  p = predictor_input_len(config.data, stage, t, replay, own_predictor_tokenizer)
  return batch_layout.abstract(
    {"B": b, "T": t, "C": c, "P": p}, functools.partial(sharding.batch_sharding, mesh)
  )


def compile_train_step(config, *, stage: str = "cpt", process_count: int = 1) -> Report:
  """Validates `config` against its mesh over all local devices, then lowers and compiles the
  trainer's train step on abstract inputs. Raises validate.ConfigValidationError first when a
  shape does not divide the mesh (`process_count` is the target's, for the batch checks)."""
  from ifp_jax.train.trainer import Trainer  # the trainer's own model, optimizer and step config

  mesh_shape = sharding.resolve_mesh_shape(tuple(config.mesh), jax.device_count())
  with tempfile.TemporaryDirectory(prefix="ifp_compile_check_") as workdir:
    trainer = Trainer(config, workdir)
    validate.validate(config, trainer.ifp, mesh_shape, process_count=process_count)
    ifp = trainer.ifp
    rolled = dataclasses.replace(
      ifp,
      llm=ifp.llm.replace(scan_unroll=1),
      predictor=ifp.predictor and ifp.predictor.replace(scan_unroll=1),
    )
    step_cfg = dataclasses.replace(trainer.step_cfg, ifp=rolled)
    with trainer._scope():
      abstract, shardings = abstract_state(rolled, trainer.tx, trainer.mesh)
      train, _ = compile_steps(
        step_cfg, trainer.tx, trainer.lr_fns, shardings, trainer.mesh, BATCH_NDIMS
      )
      own = trainer.predictor_tokenizer is not trainer.tokenizer
      batch = abstract_batch(config, stage, trainer.mesh, own)
      t0 = time.perf_counter()
      compiled = train.lower(abstract, batch).compile()
      seconds = time.perf_counter() - t0
    trainer.ckpt.close()
  mem = compiled.memory_analysis()
  model = abstract.params["model"]
  return Report(
    devices=jax.device_count(),
    mesh=dict(zip(sharding.MESH_AXES, mesh_shape, strict=True)),
    stage=stage,
    batch_size=int(config.train.batch_size),
    seq_len=int(config.train.seq_len),
    dtype=str(config.model.dtype),
    remat=str(config.model.remat),
    params_total=count(abstract.params),
    llm_params=count(model["llm"]),
    predictor_params=count(model.get("predictor", {})),
    param_bytes=shard_bytes(abstract.params),
    opt_bytes=shard_bytes(abstract.opt_state),
    replicated_param_bytes=replicated_bytes(abstract.params),
    argument_bytes=int(mem.argument_size_in_bytes),
    output_bytes=int(mem.output_size_in_bytes),
    alias_bytes=int(mem.alias_size_in_bytes),
    temp_bytes=int(mem.temp_size_in_bytes),
    compile_seconds=seconds,
  )


def markdown_table(rows: list[tuple[str, Report, float | None]]) -> str:
  """rows: (target name, report, HBM GiB per device or None) -> a markdown table in GiB."""
  g = lambda b: f"{b / GIB:.2f}"  # noqa: E731
  lines = [
    "| target | devices | mesh (data, fsdp, tensor) | batch x seq | params (unsplit) | "
    "optimizer | args | temp | peak | HBM | compile |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for name, r, hbm in rows:
    mesh = f"({r.mesh['data']}, {r.mesh['fsdp']}, {r.mesh['tensor']})"
    fits = "" if hbm is None else f"{hbm:g}" + (" ok" if r.peak_bytes <= hbm * GIB else " OVER")
    lines.append(
      f"| {name} | {r.devices} | {mesh} | {r.batch_size} x {r.seq_len} | "
      f"{g(r.param_bytes)} ({g(r.replicated_param_bytes)}) | {g(r.opt_bytes)} | "
      f"{g(r.argument_bytes)} | {g(r.temp_bytes)} | {g(r.peak_bytes)} | {fits} | "
      f"{r.compile_seconds:.0f} s |"
    )
  return "\n".join(lines)


def describe(r: Report) -> str:
  g = lambda b: f"{b / GIB:.3f} GiB"  # noqa: E731
  return "\n".join(
    [
      f"train step ({r.stage}) on {r.devices} devices, mesh {r.mesh}, batch {r.batch_size} x "
      f"{r.seq_len}, dtype {r.dtype}, remat {r.remat}",
      f"  parameters: {r.params_total / 1e9:.3f} B (LLM {r.llm_params / 1e9:.3f} B, predictor "
      f"{r.predictor_params / 1e6:.1f} M)",
      "  per device:",
      f"    parameters        {g(r.param_bytes)}  ({g(r.replicated_param_bytes)} replicated)",
      f"    optimizer state   {g(r.opt_bytes)}",
      f"    arguments         {g(r.argument_bytes)}  (state + batch)",
      f"    outputs           {g(r.output_bytes)}  ({g(r.alias_bytes)} in donated buffers)",
      f"    temporaries       {g(r.temp_bytes)}  (activations, gradients, workspace)",
      f"    peak estimate     {g(r.peak_bytes)}",
      f"  compile time {r.compile_seconds:.1f} s",
    ]
  )


def write_json(path: str | pathlib.Path, report: Report) -> None:
  import json

  pathlib.Path(path).write_text(json.dumps(report.to_dict(), indent=2))
