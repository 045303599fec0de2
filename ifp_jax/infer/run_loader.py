"""Load a trained run (a launch.train WORKDIR) for eval, generation and export.

The checkpoint's JSON metadata holds the IFP config and the tokenizer specs (the LLM's and the
predictor's) the run was trained with, so a WORKDIR is self-describing: no config file is
needed to read it back.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax

from ifp_jax.data.tokenization import Tokenizer, load_tokenizer
from ifp_jax.model.ifp_model import IFPConfig, init_params
from ifp_jax.train import sharding
from ifp_jax.train.checkpointing import Checkpointer, restore_params


@dataclasses.dataclass
class LoadedRun:
  workdir: pathlib.Path
  step: int
  ifp: IFPConfig
  params: Any  # IFPModel params (the 'model' sub-tree of the train state), unboxed
  tokenizer: Tokenizer
  meta: dict  # the checkpoint's metadata (config, stage, ...)
  # What the predictor reads text with (`meta['predictor_tokenizer']`); the LLM's when shared.
  predictor_tokenizer: Tokenizer | None = None

  def __post_init__(self):
    self.predictor_tokenizer = self.predictor_tokenizer or self.tokenizer


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  workdir = pathlib.Path(workdir).expanduser().absolute()
  if not workdir.is_dir():
    raise FileNotFoundError(f"run directory {workdir} does not exist")
  ckpt = workdir / "checkpoints"
  if not ckpt.is_dir() or not any(p.name.isdigit() for p in ckpt.iterdir()):
    raise FileNotFoundError(
      f"{workdir} holds no checkpoint (expected {ckpt}/<step>/, written "
      f"by `python -m launch.train --workdir={workdir}`)"
    )
  return ckpt


def ifp_config_from_meta(meta: dict, source: str = "checkpoint metadata") -> IFPConfig:
  """The IFPConfig a run was trained with, from its checkpoint metadata."""
  try:
    return IFPConfig.from_dict(meta["ifp"], source)
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(
      f"{source}: incompatible IFP config ({type(e).__name__}: {e}); was it "
      f"written by this version of ifp_jax?"
    ) from e


def read_meta(workdir: str | pathlib.Path, step: int | None = None) -> dict:
  """The JSON metadata of the latest (or `step`) checkpoint of a training run (no arrays)."""
  ckpt = checkpoint_dir(workdir)
  manager = Checkpointer(ckpt, async_save=False, writable=False)
  try:
    available = manager.manager.all_steps()
    if step is not None and step not in available:
      raise FileNotFoundError(f"{ckpt} has no step {step}; available: {sorted(available)}")
    return manager.read_meta(step)
  finally:
    manager.close()


def load_run(
  workdir: str | pathlib.Path, step: int | None = None, mesh=None, dtype: str | None = None
) -> LoadedRun:
  """Params (no optimizer state) of the latest (or `step`) checkpoint of a training run.

  `mesh` (default: a 1-device mesh) decides the params' shardings; `dtype` overrides the
  compute dtype (e.g. 'float32' for exact comparisons with PyTorch).
  """
  ckpt = checkpoint_dir(workdir)
  meta = read_meta(ckpt.parent, step)
  ifp = ifp_config_from_meta(meta, f"{ckpt}/{meta.get('step', step)}/meta")
  if dtype is not None:
    ifp = dataclasses.replace(
      ifp,
      llm=ifp.llm.replace(dtype=dtype),
      predictor=ifp.predictor and ifp.predictor.replace(dtype=dtype),
    )
  mesh = mesh or sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  boxed = jax.eval_shape(lambda: init_params(ifp, jax.random.key(0)))
  shardings = sharding.logical_shardings(boxed, mesh)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    sharding.strip_boxes(boxed),
    shardings,
  )
  params, meta = restore_params(ckpt, {"model": abstract}, step)
  tokenizer = load_tokenizer(meta["tokenizer"])
  # Runs before predictors had their own tokenizer stored none: they shared the LLM's.
  pred_spec = meta.get("predictor_tokenizer") or meta["tokenizer"]
  return LoadedRun(
    workdir=ckpt.parent,
    step=int(meta["step"]),
    ifp=ifp,
    params=params["model"],
    tokenizer=tokenizer,
    meta=meta,
    predictor_tokenizer=tokenizer if pred_spec == meta["tokenizer"] else load_tokenizer(pred_spec),
  )
