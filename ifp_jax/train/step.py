"""Train state and the pure train step (loss, grads, one Optax update of model + multipliers)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ifp_jax.data.batch import Batch
from ifp_jax.model import masking
from ifp_jax.model.ifp_model import IFPConfig, IFPModel
from ifp_jax.train import optim
from ifp_jax.train.losses import weighted_cross_entropy

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  step: Array  # int32 scalar: global step over all stages
  params: Any  # {'model': IFPModel params, 'lagrange': {'lambda1', 'lambda2'}}
  opt_state: Any


def init_lagrange() -> dict[str, Array]:
  return {"lambda1": jnp.zeros((), jnp.float32), "lambda2": jnp.zeros((), jnp.float32)}


def create_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  """params = {'model': ..., 'lagrange': ...} (boxed or not); optimizer state mirrors them."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static parts of the step (hashable)."""

  ifp: IFPConfig
  target_warmup_steps: int = 0  # HardConcrete target ramps 0 -> 1 - k/d_ff over these steps
  seed: int = 0
  # Model components (train.freeze) whose gradient is not computed: stop_gradient lets XLA drop
  # their weight-gradient matmuls (the optimizer's set_to_zero alone still paid for them).
  frozen: tuple[str, ...] = ()


def _as_batch(batch: Batch | Mapping[str, Array]) -> Batch:
  # The host iterator yields dicts (Grain batches dicts); the step reads fields by name.
  return batch if isinstance(batch, Batch) else Batch.from_dict(batch)


def _group_norm(grads: Any, group: str) -> Array:
  sub = grads["model"].get(group) if group != "lagrange" else grads["lagrange"]
  return optax.tree.norm(sub) if sub is not None else jnp.zeros(())


def train_step(
  state: TrainState,
  batch: Batch | Mapping[str, Array],
  *,
  cfg: StepConfig,
  tx: optax.GradientTransformation,
  lr_fns: dict[str, Callable],
) -> tuple[TrainState, dict[str, Array]]:
  """batch: a `Batch` or the pipeline's dict of its fields (layout: ifp_jax/data/batch.py)."""
  ifp = cfg.ifp
  model = IFPModel(ifp)
  batch = _as_batch(batch)
  rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
  hc = ifp.hard_concrete
  target = masking.target_sparsity(state.step, ifp.target_sparsity, cfg.target_warmup_steps)

  def loss_fn(params):
    model_params = {
      name: jax.lax.stop_gradient(sub) if optim.component_group(name) in cfg.frozen else sub
      for name, sub in params["model"].items()
    }
    if "predictor_trunk" in cfg.frozen and "predictor" in model_params:
      model_params["predictor"] = {
        key: jax.lax.stop_gradient(sub) if optim.in_predictor_trunk(("predictor", key)) else sub
        for key, sub in model_params["predictor"].items()
      }
    out = model.apply(
      {"params": model_params}, batch.model_inputs(), deterministic=False, rngs={"mask": rng}
    )
    ce, tokens = weighted_cross_entropy(out.logits, batch.targets, batch.loss_weights)
    aux = {"ce": ce, "tokens": tokens}
    loss = ce
    if hc:
      lag = params["lagrange"]
      penalty = masking.lagrangian_penalty(
        out.masks.expected_sparsity, target, lag["lambda1"], lag["lambda2"]
      )
      loss = loss + penalty
      aux.update(
        penalty=penalty, expected_sparsity=out.masks.expected_sparsity, target_sparsity=target
      )
    if out.masks.masks is not None:
      aux.update({f"mask_{k}": v for k, v in masking.mask_stats(out.masks.masks).items()})
    return loss, aux

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(
    aux,
    loss=loss,
    grad_norm=optax.tree.norm(grads["model"]),
    grad_norm_llm=_group_norm(grads, "llm"),  # 0 when frozen (not computed)
    lambda1=state.params["lagrange"]["lambda1"],
    lambda2=state.params["lagrange"]["lambda2"],
    **{f"lr_{name}": fn(state.step) for name, fn in lr_fns.items()},
  )
  if ifp.uses_predictor:
    metrics["grad_norm_predictor"] = _group_norm(grads, "predictor")
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(
  params: Any, batch: Batch | Mapping[str, Array], *, cfg: StepConfig
) -> dict[str, Array]:
  """Loss with deterministic (hard top-k) masks: what pruned inference computes."""
  batch = _as_batch(batch)
  out = IFPModel(cfg.ifp).apply(
    {"params": params["model"]}, batch.model_inputs(), deterministic=True
  )
  ce, tokens = weighted_cross_entropy(out.logits, batch.targets, batch.loss_weights)
  return {"ce": ce, "tokens": tokens}
