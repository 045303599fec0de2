"""model/swiglu.py: the hand-written VJP equals autodiff of the same function, and MaskedSwiGLU
uses it with the parameter paths nn.Dense gave (checkpoints and HF import read those)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.layers import MaskedSwiGLU
from ifp_jax.model.swiglu import swiglu, swiglu_reference

N, D, F = 12, 8, 20


def _inputs(seed=0, dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(seed), 5)
  x = jax.random.normal(ks[0], (N, D), dtype)
  w_gate, w_up = (jax.random.normal(k, (D, F), dtype) * 0.5 for k in ks[1:3])
  w_down = jax.random.normal(ks[3], (F, D), dtype) * 0.5
  mask = jax.nn.sigmoid(jax.random.normal(ks[4], (N, F), dtype))
  return x, w_gate, w_up, w_down, mask


@pytest.mark.parametrize("masked", [False, True])
def test_custom_vjp_equals_autodiff(masked):
  x, w_gate, w_up, w_down, mask = _inputs()
  args = (x, w_gate, w_up, w_down) + ((mask,) if masked else ())
  probe = jax.random.normal(jax.random.key(9), (N, D))  # a cotangent that is not all ones

  def loss(fn):
    return lambda *a: jnp.sum(fn(*a) * probe)

  argnums = tuple(range(len(args)))
  got_y, got_g = jax.value_and_grad(loss(swiglu), argnums)(*args)
  ref_y, ref_g = jax.value_and_grad(loss(swiglu_reference), argnums)(*args)
  np.testing.assert_array_equal(got_y, ref_y)  # same forward ops
  assert len(got_g) == len(args)
  for name, g, r in zip(("x", "w_gate", "w_up", "w_down", "mask"), got_g, ref_g):
    assert g.shape == r.shape, name
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5, err_msg=name)


def test_mask_gradient_is_zero_only_where_it_should_be():
  x, w_gate, w_up, w_down, mask = _inputs(1)
  mask = mask.at[:, 3].set(0.0)  # a dropped unit still gets a gradient: it may come back
  g = jax.grad(lambda m: jnp.sum(swiglu(x, w_gate, w_up, w_down, m) ** 2))(mask)
  assert np.all(np.abs(np.asarray(g[:, 3])) > 0)


def test_bad_mask_shape_is_named():
  x, w_gate, w_up, w_down, mask = _inputs()
  with pytest.raises(ValueError, match=r"mask has shape \(12, 19\).*\(12, 20\)"):
    swiglu(x, w_gate, w_up, w_down, mask[:, :19])


CFG = LlamaConfig(
  vocab_size=16, hidden_size=D, intermediate_size=F, num_hidden_layers=1, initializer_range=0.5
)


@pytest.mark.parametrize("mask_shape", [None, (2, 1, F), (2, 3, F)])
def test_module_matches_plain_dense_layers(mask_shape):
  """MaskedSwiGLU (custom VJP) == the nn.Dense formulation it replaced, values and gradients."""
  x = jax.random.normal(jax.random.key(3), (2, 3, D))
  mask = None
  if mask_shape is not None:
    mask = jax.nn.sigmoid(jax.random.normal(jax.random.key(4), mask_shape))
  params = nn.unbox(MaskedSwiGLU(CFG).init(jax.random.key(0), x, mask)["params"])
  assert {k: v["kernel"].shape for k, v in params.items()} == {
    "gate_proj": (D, F),
    "up_proj": (D, F),
    "down_proj": (F, D),
  }

  def plain(p, x, m):
    up = x @ p["up_proj"]["kernel"]
    up = up if m is None else up * m
    return (nn.silu(x @ p["gate_proj"]["kernel"]) * up) @ p["down_proj"]["kernel"]

  def loss(fn):
    return lambda p, x, m: jnp.sum(jnp.sin(fn(p, x, m)))

  module = lambda p, x, m: MaskedSwiGLU(CFG).apply({"params": p}, x, m)  # noqa: E731
  argnums = (0, 1) if mask is None else (0, 1, 2)
  got = jax.value_and_grad(loss(module), argnums)(params, x, mask)
  ref = jax.value_and_grad(loss(plain), argnums)(params, x, mask)
  np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
  for g, r in zip(jax.tree.leaves(got[1]), jax.tree.leaves(ref[1])):
    assert g.shape == r.shape
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_griffin_path_sows_the_same_activation():
  x = jax.random.normal(jax.random.key(3), (2, 3, D))
  params = MaskedSwiGLU(CFG).init(jax.random.key(0), x)["params"]
  y, state = MaskedSwiGLU(CFG).apply({"params": params}, x, mutable=["intermediates"])
  np.testing.assert_allclose(y, MaskedSwiGLU(CFG).apply({"params": params}, x), rtol=1e-6)
  (act,) = state["intermediates"]["ffn_act"]
  assert act.shape == (2, 3, F)
