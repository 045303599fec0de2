"""Optimizer groups (ifp_jax/train/optim.py): the head's centre never trains; the head's output
bias can train at its own LR; without that option the state is what it always was; a frozen
predictor trunk leaves the head's output layer as the only predictor part that trains."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ifp_jax.train import optim


def params():
  return {
    "model": {
      "llm": {"w": jnp.ones((3,))},
      "predictor": {
        "head_out": {"kernel": jnp.ones((2, 4)), "bias": jnp.ones((4,))},
        "head_center": jnp.ones((2,)),
      },
    },
    "lagrange": {"lambda1": jnp.zeros(()), "lambda2": jnp.zeros(())},
  }


def one_update(tx, p):
  grads = jax.tree.map(jnp.ones_like, p)
  updates, _ = tx.update(grads, tx.init(p), p)
  return updates


def make(bias_lr=None, frozen=()):
  return optim.make_optimizer(
    llm_schedule=optax.constant_schedule(1e-2),
    predictor_schedule=optax.constant_schedule(1e-3),
    predictor_bias_schedule=None if bias_lr is None else optax.constant_schedule(bias_lr),
    lagrange_lr=0.0,
    weight_decay=0.0,
    grad_clip=0.0,
    frozen=frozen,
  )


def test_the_head_bias_trains_at_its_own_lr_and_the_centre_never_moves():
  p = params()
  up = one_update(make(bias_lr=1e-1), p)["model"]
  # Adam's first step moves every entry by its LR (gradients of one sign).
  np.testing.assert_allclose(up["predictor"]["head_out"]["bias"], -1e-1, rtol=1e-4)
  np.testing.assert_allclose(up["predictor"]["head_out"]["kernel"], -1e-3, rtol=1e-4)
  np.testing.assert_allclose(up["llm"]["w"], -1e-2, rtol=1e-4)
  np.testing.assert_array_equal(up["predictor"]["head_center"], 0.0)
  labels = optim.param_labels(p, bias_group=True)["model"]["predictor"]
  assert labels == {
    "head_out": {"kernel": "predictor", "bias": "predictor_bias"},
    "head_center": "frozen",
  }


def test_without_a_bias_lr_the_bias_trains_with_the_predictor_and_the_state_is_unchanged():
  p = params()
  tx = make()
  up = one_update(tx, p)["model"]["predictor"]
  np.testing.assert_allclose(up["head_out"]["bias"], -1e-3, rtol=1e-4)
  np.testing.assert_array_equal(up["head_center"], 0.0)
  # Checkpoints written before the option existed restore: no new optimizer-state entry.
  assert set(tx.init(p).inner_states) == {"llm", "predictor", "lagrange", "frozen"}


def test_a_frozen_predictor_trunk_leaves_only_the_head_output_layer_training():
  p = params()
  p["model"]["predictor"]["backbone"] = {"w": jnp.ones((3,))}
  p["model"]["predictor"]["head_in"] = {"kernel": jnp.ones((3, 2))}
  labels = optim.param_labels(p, frozen=("predictor_trunk",))["model"]
  assert labels["predictor"] == {
    "backbone": {"w": "frozen"},
    "head_in": {"kernel": "frozen"},
    "head_out": {"kernel": "predictor", "bias": "predictor"},
    "head_center": "frozen",
  }
  assert labels["llm"] == {"w": "llm"}
  up = one_update(make(frozen=("predictor_trunk",)), p)["model"]["predictor"]
  np.testing.assert_array_equal(up["backbone"]["w"], 0.0)
  np.testing.assert_array_equal(up["head_in"]["kernel"], 0.0)
  np.testing.assert_allclose(up["head_out"]["kernel"], -1e-3, rtol=1e-4)


def test_an_unknown_frozen_part_is_refused_by_name():
  with pytest.raises(ValueError, match="freeze='head'.*predictor_trunk"):
    make(frozen=("head",))
