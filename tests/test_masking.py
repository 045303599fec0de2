"""Tests for ifp_jax.model.masking: exact SoftTopK, implicit gradient, CoDA, top-k, HardConcrete."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.model import masking as M


def _bisection_lam(s: np.ndarray, k: int, eps: float) -> np.ndarray:
  """Float64 reference: bisection on tau so that sum(min(1, exp((s - tau)/eps))) = k per row."""
  s = np.asarray(s, np.float64)
  lo = s.min(-1, keepdims=True) - eps * np.log(s.shape[-1]) - 1.0  # sum >= k here
  hi = s.max(-1, keepdims=True) + 1.0  # sum < k here

  def total(tau):
    return np.minimum(1.0, np.exp((s - tau) / eps)).sum(-1, keepdims=True)

  for _ in range(200):
    mid = 0.5 * (lo + hi)
    big = total(mid) > k
    lo = np.where(big, mid, lo)
    hi = np.where(big, hi, mid)
  return np.minimum(1.0, np.exp((s - 0.5 * (lo + hi)) / eps))


def _scores(shape, seed=0, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("eps", [0.01, 0.3, 3.0])
def test_soft_topk_rows_sum_to_k_and_mask_has_k_nonzeros(eps):
  s = _scores((3, 4, 40), seed=1)
  k = 7
  lam = np.asarray(M.soft_topk(s, k, eps))
  assert lam.shape == s.shape and lam.dtype == np.float32
  np.testing.assert_allclose(lam.sum(-1), k, rtol=1e-3)
  assert lam.max() <= 1.0 and lam.min() >= 0.0
  m = np.asarray(M.soft_topk_mask(s, k, eps))
  assert ((m != 0).sum(-1) == k).all()
  assert m.max() <= 1.0 and m[m != 0].min() > 0.0
  # kept units are the k largest scores and carry their lam values
  hard = np.asarray(M.hard_topk(s, k))
  np.testing.assert_array_equal(m != 0, hard == 1)
  np.testing.assert_allclose(m, lam * hard, rtol=0, atol=0)
  # shift invariance per row
  shifted = np.asarray(M.soft_topk(s + np.float32(5.0), k, eps))
  np.testing.assert_allclose(shifted, lam, atol=2e-5)


def test_soft_topk_small_eps_becomes_hard_topk():
  rng = np.random.default_rng(2)
  s = np.stack([rng.permutation(64) for _ in range(5)]).astype(np.float32) * 0.5
  k = 16
  m = np.asarray(M.soft_topk_mask(s, k, 1e-3))
  np.testing.assert_allclose(m, np.asarray(M.hard_topk(s, k)), atol=1e-6)
  # a larger eps is clearly soft: the test above is not trivially satisfied
  soft = np.asarray(M.soft_topk_mask(s, k, 1.0))
  assert np.abs(soft - np.asarray(M.hard_topk(s, k))).max() > 0.1


@pytest.mark.parametrize("eps,k", [(0.05, 5), (0.5, 12), (2.0, 30), (0.5, 1), (0.2, 39)])
def test_soft_topk_matches_float64_bisection(eps, k):
  s = _scores((6, 40), seed=3, scale=2.0)
  lam = np.asarray(M.soft_topk(s, k, eps))
  ref = _bisection_lam(s, k, eps)
  np.testing.assert_allclose(lam, ref, atol=2e-5)


def test_soft_topk_k_equals_n_is_all_ones_with_zero_gradient():
  s = _scores((2, 9), seed=4)
  lam = M.soft_topk(s, 9, 0.5)
  np.testing.assert_allclose(np.asarray(lam), 1.0)
  g = jax.grad(lambda x: jnp.sum(M.soft_topk(x, 9, 0.5) * jnp.arange(9.0)))(jnp.asarray(s))
  assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_allclose(np.asarray(g), 0.0)


def test_soft_topk_matches_converged_coda():
  s = _scores((4, 30), seed=5)
  k = 8
  for eps in (0.5, 1.0):
    lam = np.asarray(M.soft_topk(s, k, eps))
    coda = np.asarray(M.coda_soft_topk(s, k, eps, num_iters=300))
    np.testing.assert_allclose(coda, lam, atol=1e-4)
  # annealed schedule (paper-style 4 -> x0.7) ends at the same fixed point
  annealed = np.asarray(M.coda_soft_topk(s, k, 0.5, num_iters=300, eps_start=4.0))
  np.testing.assert_allclose(annealed, np.asarray(M.soft_topk(s, k, 0.5)), atol=1e-4)
  # and few iterations are visibly not converged, so the check above has teeth
  few = np.asarray(M.coda_soft_topk(s, k, 0.5, num_iters=1))
  assert np.abs(few - np.asarray(M.soft_topk(s, k, 0.5))).max() > 1e-2


def test_bf16_scores_compute_in_f32():
  s = jnp.asarray(_scores((2, 50), seed=6), jnp.bfloat16)
  lam = M.soft_topk(s, 10, 0.2)
  assert lam.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(lam.sum(-1)), 10.0, rtol=1e-4)


# ----------------------------------------------------------------------------- gradients


def _x64_case():
  rng = np.random.default_rng(7)
  s = rng.normal(size=(3, 12)) * 1.5
  w = rng.normal(size=(3, 12))
  return s, w, 4, 0.4


def test_soft_topk_grad_matches_finite_differences_float64():
  s, w, k, eps = _x64_case()
  with jax.enable_x64(True):
    sj, wj = jnp.asarray(s, jnp.float64), jnp.asarray(w, jnp.float64)

    def f(x, e):
      return jnp.sum(wj * M.soft_topk(x, k, e))

    lam = np.asarray(M.soft_topk(sj, k, eps))
    assert lam.dtype == np.float64
    # the case exercises saturated and free entries, away from the kink at lam == 1
    assert (lam == 1.0).sum() >= 2 and (lam < 1.0).sum() >= 20
    assert lam[lam < 1.0].max() < 0.99
    g_s, g_e = jax.grad(f, argnums=(0, 1))(sj, jnp.float64(eps))
    h = 1e-6
    pert = np.eye(s.size).reshape((s.size,) + s.shape) * h  # [N, 3, 12]
    fv = jax.vmap(lambda x: f(x, eps))
    fd = (np.asarray(fv(sj + pert)) - np.asarray(fv(sj - pert))) / (2 * h)
    np.testing.assert_allclose(np.asarray(g_s).ravel(), fd, rtol=1e-3, atol=1e-8)
    fd_e = (float(f(sj, eps + h)) - float(f(sj, eps - h))) / (2 * h)
    np.testing.assert_allclose(float(g_e), fd_e, rtol=1e-3)
    # sum(lam) == k is constant, so its gradient vanishes (O(n) VJP projects it out)
    g_sum = jax.grad(lambda x: jnp.sum(M.soft_topk(x, k, eps)))(sj)
    np.testing.assert_allclose(np.asarray(g_sum), 0.0, atol=1e-12)


def test_soft_topk_grad_matches_autodiff_through_coda_float64():
  s, w, k, eps = _x64_case()
  with jax.enable_x64(True):
    sj, wj = jnp.asarray(s, jnp.float64), jnp.asarray(w, jnp.float64)
    g_exact = jax.grad(lambda x: jnp.sum(wj * M.soft_topk(x, k, eps)))(sj)
    g_coda = jax.grad(lambda x: jnp.sum(wj * M.coda_soft_topk(x, k, eps, num_iters=400)))(sj)
    np.testing.assert_allclose(np.asarray(g_exact), np.asarray(g_coda), rtol=1e-3, atol=1e-7)
    # the mask's gradient is the lam gradient restricted to the kept units
    hard = np.asarray(M.hard_topk(sj, k))
    g_mask = jax.grad(lambda x: jnp.sum(wj * M.soft_topk_mask(x, k, eps)))(sj)
    g_ref = jax.grad(lambda x: jnp.sum(wj * hard * M.soft_topk(x, k, eps)))(sj)
    np.testing.assert_allclose(np.asarray(g_mask), np.asarray(g_ref), rtol=1e-12)


def test_soft_topk_jit_vmap_large_shape():
  x = jnp.asarray(_scores((16, 30, 1536), seed=8))
  k = 512
  lam = jax.jit(lambda s: M.soft_topk(s, k, 0.1))(x)
  np.testing.assert_allclose(np.asarray(lam.sum(-1)), k, rtol=1e-3)
  lam_v = jax.jit(jax.vmap(lambda s: M.soft_topk_mask(s, k, 0.1)))(x)
  assert lam_v.shape == x.shape
  np.testing.assert_array_equal(np.asarray((lam_v != 0).sum(-1)), k)
  np.testing.assert_allclose(
    np.asarray(lam_v.sum(-1)), np.asarray((lam * (lam_v != 0)).sum(-1)), rtol=1e-5
  )
  # traced eps (e.g. an annealing schedule) under jit
  lam_e = jax.jit(lambda s, e: M.soft_topk(s, k, e))(x[:2, :2], jnp.float32(0.1))
  np.testing.assert_allclose(np.asarray(lam_e), np.asarray(lam[:2, :2]), atol=1e-6)


# ----------------------------------------------------------------------------- hard top-k


def test_hard_topk_and_indices_with_ties():
  rng = np.random.default_rng(9)
  s = rng.integers(0, 4, size=(5, 3, 20)).astype(np.float32)  # many ties
  k = 6
  hard = np.asarray(M.hard_topk(s, k))
  assert set(np.unique(hard)) <= {0.0, 1.0}
  assert (hard.sum(-1) == k).all()
  idx = np.asarray(M.topk_indices(s, k))
  assert idx.dtype == np.int32 and idx.shape == (5, 3, k)
  assert (np.diff(idx, axis=-1) > 0).all()
  from_idx = np.zeros_like(s)
  np.put_along_axis(from_idx, idx, 1.0, axis=-1)
  np.testing.assert_array_equal(hard, from_idx)
  # numpy reference: stable sort descending -> ties go to the lower index
  order = np.argsort(-s, axis=-1, kind="stable")[..., :k]
  np.testing.assert_array_equal(idx, np.sort(order, axis=-1))


# ----------------------------------------------------------------------------- HardConcrete


def test_hard_concrete_eval_mask_and_sample_range():
  la = _scores((2, 3, 50), seed=10)
  m = np.asarray(M.hard_concrete_eval_mask(la, 13))
  assert (m.sum(-1) == 13).all()
  kept_min = np.where(m == 1, la, np.inf).min(-1)
  dropped_max = np.where(m == 0, la, -np.inf).max(-1)
  assert (kept_min >= dropped_max).all()
  z = np.asarray(M.hard_concrete_sample(jax.random.key(0), la))
  assert z.shape == la.shape and z.min() >= 0.0 and z.max() <= 1.0
  g = jax.grad(lambda a: jnp.sum(M.hard_concrete_sample(jax.random.key(0), a)))(jnp.asarray(la))
  assert np.abs(np.asarray(g)).sum() > 0


def test_expected_sparsity_matches_monte_carlo():
  la = jnp.linspace(-3.0, 3.0, 16).reshape(2, 8)
  n_samples = 20000
  z = jax.vmap(lambda key: M.hard_concrete_sample(key, la))(
    jax.random.split(jax.random.key(1), n_samples)
  )
  freq_zero = np.asarray((z == 0).mean(0))  # [2, 8]
  p_nonzero = np.asarray(M.hard_concrete_prob_nonzero(la))
  np.testing.assert_allclose(freq_zero, 1.0 - p_nonzero, atol=0.015)
  sp = np.asarray(M.expected_sparsity(la))
  assert sp.shape == (2,)
  np.testing.assert_allclose(sp, freq_zero.mean(-1), atol=0.01)
  sp_all = float(M.expected_sparsity(la, axis=None))
  np.testing.assert_allclose(sp_all, freq_zero.mean(), atol=0.01)


@pytest.mark.parametrize("init,target", [(3.0, 0.5), (-3.0, 0.3)])
def test_lagrangian_ascent_then_descent_moves_sparsity_to_target(init, target):
  la = jnp.full((4, 32), init) + jnp.linspace(-0.5, 0.5, 32)
  s_hat = M.expected_sparsity(la, axis=None)
  d = float(s_hat) - target
  assert abs(d) > 0.1

  def pen(lams, a):
    return M.lagrangian_penalty(M.expected_sparsity(a, axis=None), target, lams[0], lams[1])

  lams = jnp.zeros(2)
  g = np.asarray(jax.grad(pen)(lams, la))
  np.testing.assert_allclose(g, [d, d * d], rtol=1e-5)
  # multipliers are maximised: one ascent step raises the penalty
  lams_new = lams + 1.0 * g
  assert float(pen(lams_new, la)) > float(pen(lams, la))
  # then one descent step on the mask logits brings expected sparsity towards the target
  g_a = jax.grad(pen, argnums=1)(lams_new, la)
  la_new = la - 100.0 * g_a
  d_new = float(M.expected_sparsity(la_new, axis=None)) - target
  assert abs(d_new) < abs(d)
  assert np.sign(d_new) == np.sign(d) or abs(d_new) < 0.05


def test_target_sparsity_ramp():
  ts = [float(M.target_sparsity(s, 0.6, 100)) for s in (0, 25, 100, 500)]
  np.testing.assert_allclose(ts, [0.0, 0.15, 0.6, 0.6], atol=1e-7)
  traced = jax.jit(lambda s: M.target_sparsity(s, 0.6, 100))(jnp.int32(50))
  np.testing.assert_allclose(float(traced), 0.3, atol=1e-7)
  assert float(M.target_sparsity(0, 0.6, 0)) == pytest.approx(0.6)


def test_mask_stats():
  m = jnp.asarray([[[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.25]]])  # [B=1, L=2, F=4]
  st = M.mask_stats(m)
  assert float(st["kept_frac"]) == pytest.approx(3 / 8)
  assert float(st["kept_mean"]) == pytest.approx(1.75 / 3)
  assert int(st["kept_count_min"]) == 1 and int(st["kept_count_max"]) == 2


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
  "fn,match",
  [
    (lambda: M.soft_topk(np.zeros((2, 5)), 6, 0.1), "exceeds the number of units"),
    (lambda: M.soft_topk(np.zeros((2, 5)), 0, 0.1), "k must be >= 1"),
    (lambda: M.soft_topk(np.zeros((2, 5)), 2, 0.0), "eps must be > 0"),
    (lambda: M.soft_topk(np.zeros((2, 5)), 2, -1.0), "eps must be > 0"),
    (lambda: M.soft_topk(np.float32(1.0), 1, 0.1), "at least 1 dim"),
    (lambda: M.soft_topk_mask(np.zeros((3, 4)), 5, 0.1), r"shape \(3, 4\)"),
    (lambda: M.hard_topk(np.zeros((3, 4)), 5), "exceeds"),
    (lambda: M.topk_indices(np.zeros((3, 4)), 0), "k must be >= 1"),
    (lambda: M.coda_soft_topk(np.zeros((3, 4)), 2, 0.0), "eps must be > 0"),
    (lambda: M.hard_concrete_eval_mask(np.zeros((3, 4)), 9), "exceeds"),
    (lambda: M.target_sparsity(0, 0.5, -1), "warmup_steps"),
  ],
)
def test_bad_inputs_raise(fn, match):
  with pytest.raises(ValueError, match=match):
    fn()


def test_non_integer_k_raises_type_error():
  with pytest.raises(TypeError, match="static Python int"):
    M.soft_topk(np.zeros((5,)), 2.5, 0.1)
