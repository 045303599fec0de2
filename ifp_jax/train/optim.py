"""Optax: AdamW for LLM and predictor (own LRs and schedules, per stage), Lagrange multipliers
by gradient ascent, all in one `update`.

Parameter groups are read off the param tree: {'model': {'llm', 'predictor', 'static_log_alpha'},
'lagrange': {'lambda1', 'lambda2'}}. The static mask's log-alphas train with the predictor group;
the predictor head's output bias trains in a group of its own ('predictor_bias') when it has its
own schedule; the head's centre (`FROZEN_PARAMS`) never trains. `train.freeze='predictor_trunk'`
freezes the predictor's backbone and head_in: only its output layer learns, on fixed features.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import optax

GROUPS = ("llm", "predictor", "predictor_bias", "lagrange", "frozen")
# Leaves (paths below the model component) that are constants of the model, not trained.
FROZEN_PARAMS = (("predictor", "head_center"),)
PREDICTOR_BIAS = ("predictor", "head_out", "bias")
# train.freeze values: model components, or the predictor's trunk (everything but head_out).
FREEZABLE = ("llm", "predictor", "predictor_trunk")
PREDICTOR_HEAD = "head_out"


def in_predictor_trunk(keys: Sequence[Any]) -> bool:
  """Whether a leaf (its keys below 'model') is the predictor's, outside its output layer."""
  return len(keys) > 1 and keys[0] == "predictor" and keys[1] != PREDICTOR_HEAD


def stage_schedule(stages: Sequence[tuple[int, float, int]]) -> optax.Schedule:
  """Piecewise over stages [(steps, peak_lr, warmup_steps)]: linear warm-up then cosine to 10%."""
  scheds, bounds, total = [], [], 0
  for steps, lr, warmup in stages:
    warmup = min(warmup, max(steps - 1, 0))
    scheds.append(
      optax.warmup_cosine_decay_schedule(
        0.0 if warmup else lr, lr, warmup, max(steps, warmup + 1), end_value=0.1 * lr
      )
    )
    total += steps
    bounds.append(total)
  return optax.join_schedules(scheds, bounds[:-1]) if len(scheds) > 1 else scheds[0]


def component_group(component: str) -> str:
  """Optimizer group of a top-level model component: 'llm', else 'predictor' (static too)."""
  return "llm" if component == "llm" else "predictor"


def param_labels(params: Any, frozen: Sequence[str] = (), bias_group: bool = False) -> Any:
  """Group label for every leaf: its top-level model component, or 'lagrange'/'frozen', or
  'predictor_bias' for the head's output bias when `bias_group`."""

  def label(path, _):
    keys = tuple(getattr(p, "key", None) for p in path)
    if keys[0] == "lagrange":
      return "lagrange"
    group = component_group(keys[1])
    # Prefixes: a boxed (nn.Partitioned) leaf's path goes one key deeper.
    if group in frozen or keys[1:3] in FROZEN_PARAMS:
      return "frozen"
    if "predictor_trunk" in frozen and in_predictor_trunk(keys[1:]):
      return "frozen"
    if bias_group and keys[1:4] == PREDICTOR_BIAS:
      return "predictor_bias"
    return group

  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(
  *,
  llm_schedule: optax.Schedule,
  predictor_schedule: optax.Schedule,
  lagrange_lr: float,
  weight_decay: float,
  grad_clip: float,
  b1=0.9,
  b2=0.95,
  frozen: Sequence[str] = (),
  predictor_bias_schedule: optax.Schedule | None = None,
) -> optax.GradientTransformation:
  """One transformation for the whole state. Clipping is per group (norms logged separately).
  With `predictor_bias_schedule`, the head's output bias is a group of its own (this adds one
  entry to the optimizer state, so a run keeps the choice it started with)."""
  for name in frozen:
    if name not in FREEZABLE:
      raise ValueError(f"freeze={name!r}: expected one of {', '.join(FREEZABLE)}")

  def adamw(schedule):
    chain = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    return optax.chain(*chain, optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))

  transforms = {
    "llm": adamw(llm_schedule),
    "predictor": adamw(predictor_schedule),
    # Gradient ascent: flip the sign, then plain SGD (the multipliers are unbounded scalars).
    "lagrange": optax.chain(optax.scale(-1.0), optax.sgd(lagrange_lr)),
    "frozen": optax.set_to_zero(),
  }
  bias_group = predictor_bias_schedule is not None
  if bias_group:
    transforms["predictor_bias"] = adamw(predictor_bias_schedule)
  return optax.multi_transform(transforms, lambda p: param_labels(p, frozen, bias_group))
