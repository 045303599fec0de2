"""Build the train state directly in its shardings, and compile the step with them.

eval_shape(init) -> logical specs -> NamedShardings -> jit(init, out_shardings): the state never
exists unsharded on one device. Pretrained numpy weights are placed shard by shard.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
import optax

from ifp_jax.data import batch as batch_layout
from ifp_jax.model.ifp_model import IFPConfig, init_params
from ifp_jax.train import sharding
from ifp_jax.train.step import (
  StepConfig,
  TrainState,
  create_state,
  eval_step,
  init_lagrange,
  train_step,
)


def _boxed_params(ifp: IFPConfig, rng):
  return {"model": init_params(ifp, rng), "lagrange": init_lagrange()}


def abstract_state(ifp: IFPConfig, tx: optax.GradientTransformation, mesh):
  """(abstract unboxed TrainState with shardings, shardings tree)."""
  boxed = jax.eval_shape(lambda r: create_state(_boxed_params(ifp, r), tx), jax.random.key(0))
  shardings = sharding.logical_shardings(boxed, mesh)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    sharding.strip_boxes(boxed),
    shardings,
  )
  return abstract, shardings


def _place(value: np.ndarray, like: jax.ShapeDtypeStruct, name: str) -> jax.Array:
  value = np.asarray(value)
  if value.shape != like.shape:
    raise ValueError(f"pretrained weight {name}: shape {value.shape}, model expects {like.shape}")
  value = value.astype(like.dtype)
  return jax.make_array_from_callback(like.shape, like.sharding, lambda idx: value[idx])


def init_state(
  ifp: IFPConfig,
  tx: optax.GradientTransformation,
  mesh,
  rng,
  pretrained: Mapping[str, Any] | None = None,
) -> tuple[TrainState, Any]:
  """Sharded TrainState. `pretrained` = {'llm': params, 'predictor': {'backbone': params}}
  (numpy, unboxed; any subset) overrides the random init of those sub-trees."""
  abstract, shardings = abstract_state(ifp, tx, mesh)
  param_sh = shardings.params
  params = jax.jit(lambda r: nn.unbox(_boxed_params(ifp, r)), out_shardings=param_sh)(rng)
  if pretrained:
    params = _override(params, {"model": dict(pretrained)}, abstract.params)
  make = jax.jit(
    lambda p: create_state(p, tx),
    in_shardings=(param_sh,),
    out_shardings=shardings,
    donate_argnums=0,
  )
  return make(params), shardings


def _override(tree: Any, new: Any, abstract: Any, prefix: str = "") -> Any:
  if not isinstance(new, Mapping):
    return _place(new, abstract, prefix)
  out = dict(tree)
  for key, value in new.items():
    if key not in tree:
      raise KeyError(f"pretrained weights: {prefix}/{key} is not a model parameter")
    out[key] = _override(tree[key], value, abstract[key], f"{prefix}/{key}")
  return out


def compile_steps(
  step_cfg: StepConfig,
  tx: optax.GradientTransformation,
  lr_fns: dict[str, Callable],
  shardings: Any,
  mesh,
  batch_ndims: Mapping[str, int],
) -> tuple[Callable, Callable]:
  """(train_step, eval_step) jitted with in/out shardings; the state is donated."""
  batch_sh = {k: sharding.batch_sharding(mesh, n) for k, n in batch_ndims.items()}
  rep = sharding.replicated(mesh)
  train = jax.jit(
    functools.partial(train_step, cfg=step_cfg, tx=tx, lr_fns=lr_fns),
    in_shardings=(shardings, batch_sh),
    out_shardings=(shardings, rep),
    donate_argnums=0,
  )
  evaluate = jax.jit(
    functools.partial(eval_step, cfg=step_cfg),
    in_shardings=(shardings.params, batch_sh),
    out_shardings=rep,
  )
  return train, evaluate


BATCH_NDIMS = batch_layout.NDIMS  # rank of every batch field (ifp_jax/data/batch.py)
