"""Mask kinds in real training runs: soft top-k keeps exactly k units per layer at every step;
HardConcrete reaches its target sparsity through the Lagrange multipliers (gradient ascent);
the static mask trains."""

import jax
import numpy as np
import pytest
from train_utils import read_metrics, shared_data_dir, small_config

from ifp_jax.train.trainer import Trainer

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

D_FF = 384  # configs/tiny.py


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return shared_data_dir(tmp_path_factory)


def _trainer(data_dir, workdir, **overrides) -> Trainer:
  config = small_config(data_dir, mesh=(1, 1, 1), **overrides)
  return Trainer(config, workdir, devices=jax.devices()[:1])


def test_soft_topk_keeps_exactly_k_per_layer(data_dir, tmp_path):
  k = 96  # not the config's default, so the check cannot pass by accident
  _trainer(data_dir, tmp_path, model__k=k, cpt__steps=3, sft__steps=2).run()
  rows = read_metrics(tmp_path)
  assert sorted(rows) == [1, 2, 3, 4, 5]
  for step, r in rows.items():
    # min/max over every (example, chunk, layer) row of the [B, C, L, d_ff] mask
    assert r["mask_kept_count_min"] == r["mask_kept_count_max"] == k, (step, r)
    assert r["mask_kept_frac"] == pytest.approx(k / D_FF, abs=1e-7)
    assert 0 < r["mask_kept_mean"] <= 1
    assert "expected_sparsity" not in r and r["lambda1"] == 0 and r["lambda2"] == 0


# HardConcrete needs its own settings to meet the budget in a 50-step test. With the tiny
# config's defaults (predictor_lr 1e-3, lagrange_lr 0.05) the expected sparsity only climbs from
# 0.18 to 0.38 in 30 steps (target 0.667): the predictor's Adam step bounds how fast log-alpha
# moves. Faster settings, or a small head init (every unit's log-alpha then moves together),
# overshoot to ~0.85-0.9 and stick there (saturated sigmoids). These approach from below.
HC = dict(
  model__mask_kind="hard_concrete",
  model__hc_init_log_alpha=5.0,
  cpt__steps=50,
  cpt__predictor_lr=1e-2,
  train__lagrange_lr=0.4,
  train__target_warmup_frac=0.5,
)


def test_hard_concrete_reaches_target_sparsity(data_dir, tmp_path):
  trainer = _trainer(data_dir, tmp_path, **HC)
  summary = trainer.run()
  rows = read_metrics(tmp_path)
  steps = sorted(rows)
  assert steps == list(range(1, HC["cpt__steps"] + 1))
  target = 1 - trainer.ifp.k / D_FF
  first, last = rows[steps[0]], rows[steps[-1]]
  assert first["expected_sparsity"] < 0.1  # starts almost dense (log-alpha offset 5)
  assert last["target_sparsity"] == pytest.approx(target, abs=1e-6)
  assert abs(last["expected_sparsity"] - target) <= 0.02, (last["expected_sparsity"], target)
  assert summary["stages"]["cpt"]["expected_sparsity"] == last["expected_sparsity"]
  # Sampled masks follow: the kept fraction is close to 1 - E[sparsity].
  assert abs(last["mask_kept_frac"] - (1 - last["expected_sparsity"])) < 0.05
  # The multipliers moved, by exactly SGD *ascent*: row s logs the multipliers used at step s,
  # before that step's update lambda1 += lr * (s_hat - t), lambda2 += lr * (s_hat - t)^2.
  lr = HC["train__lagrange_lr"]
  for a, b in zip(steps, steps[1:], strict=False):
    d = rows[a]["expected_sparsity"] - rows[a]["target_sparsity"]
    np.testing.assert_allclose(
      rows[b]["lambda1"],
      rows[a]["lambda1"] + lr * d,
      rtol=1e-4,
      atol=1e-6,
      err_msg=f"lambda1 at step {b}",
    )
    np.testing.assert_allclose(
      rows[b]["lambda2"],
      rows[a]["lambda2"] + lr * d * d,
      rtol=1e-4,
      atol=1e-6,
      err_msg=f"lambda2 at step {b}",
    )
  assert first["lambda1"] == first["lambda2"] == 0
  assert last["lambda1"] < -0.1 and last["lambda2"] > 0.01  # pushed sparsity up, from below
  assert last["penalty"] != 0


@pytest.mark.parametrize("kind", ["static", "static_soft_topk"])
def test_static_mask_trains(data_dir, tmp_path, kind):
  steps = 10
  trainer = _trainer(data_dir, tmp_path, model__mask_kind=kind, cpt__steps=steps)
  init, _, _ = trainer.init_or_restore()
  assert trainer.ifp.predictor is None and "predictor" not in init.params["model"]
  before = np.asarray(init.params["model"]["static_log_alpha"])
  trainer.run()
  after_state, _, _ = trainer.init_or_restore()  # restores the stage-end checkpoint
  assert int(after_state.step) == steps
  after = np.asarray(after_state.params["model"]["static_log_alpha"])
  assert after.shape == before.shape == (2, D_FF)  # [layers, d_ff]
  assert np.abs(after - before).max() > 5e-3
  rows = read_metrics(tmp_path)
  losses = [rows[s]["loss"] for s in sorted(rows)]
  assert len(losses) == steps and all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
  if kind == "static":  # HardConcrete: the Lagrangian moves the expected sparsity
    assert np.abs(after - before).mean() > 1e-3
    assert rows[steps]["expected_sparsity"] != rows[1]["expected_sparsity"]
  else:  # SoftTopK: exactly k units per layer at every step, no budget term
    assert all(r["mask_kept_frac"] == pytest.approx(trainer.ifp.k / D_FF) for r in rows.values())
    assert "expected_sparsity" not in rows[steps]


def test_frozen_llm_gradient_is_not_computed_and_training_is_unchanged(data_dir, tmp_path):
  """train.freeze='llm': stop_gradient (no LLM weight gradients computed, grad_norm_llm 0) gives
  the losses and parameters of the optimizer-only freeze it replaced; the LLM never moves."""
  import dataclasses

  from ifp_jax.infer.run_loader import load_run

  overrides = dict(train__freeze="llm", cpt__steps=3, sft__steps=0, train__log_every=1)
  new = _trainer(data_dir, tmp_path / "new", **overrides)
  old = _trainer(data_dir, tmp_path / "old", **overrides)
  old.step_cfg = dataclasses.replace(old.step_cfg, frozen=())  # gradients computed, then zeroed
  init, _, _ = _trainer(data_dir, tmp_path / "init", **overrides).init_or_restore()
  new.run()
  old.run()
  a, b = read_metrics(tmp_path / "new"), read_metrics(tmp_path / "old")
  for step in (1, 2, 3):
    # Same math, other XLA fusions: f32 rounding only (Adam amplifies it a little per step).
    np.testing.assert_allclose(a[step]["loss"], b[step]["loss"], rtol=1e-5)
    assert a[step]["grad_norm_llm"] == 0 and b[step]["grad_norm_llm"] > 0
    np.testing.assert_allclose(a[step]["grad_norm_predictor"], b[step]["grad_norm_predictor"],
                               rtol=1e-4)  # fmt: skip
  pa, pb = load_run(tmp_path / "new").params, load_run(tmp_path / "old").params
  start = jax.device_get(init.params["model"])
  for x, y, z in zip(
    jax.tree.leaves(pa["llm"]), jax.tree.leaves(pb["llm"]), jax.tree.leaves(start["llm"])
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(z))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(z))
  moved = [np.abs(np.asarray(x) - np.asarray(y)).max() for x, y in
           zip(jax.tree.leaves(pa["predictor"]), jax.tree.leaves(start["predictor"]))]  # fmt: skip
  assert max(moved) > 1e-3  # 3 Adam steps at lr 1e-3 move weights ~3e-3: >> the tolerance
  for x, y in zip(jax.tree.leaves(pa["predictor"]), jax.tree.leaves(pb["predictor"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-4)


def test_everything_frozen_saves_the_initial_state_as_a_good_checkpoint(data_dir, tmp_path):
  """train.freeze='llm,predictor' (measuring a start as it is): the zero gradient is expected,
  so the run still ends with a checkpoint, and it holds the initial parameters."""
  from ifp_jax.infer.run_loader import load_run

  overrides = dict(train__freeze="llm,predictor", cpt__steps=2, sft__steps=0, train__log_every=1)
  init, _, _ = _trainer(data_dir, tmp_path / "init", **overrides).init_or_restore()
  summary = _trainer(data_dir, tmp_path / "run", **overrides).run()
  assert summary["latest_checkpoint_step"] == 2
  rows = read_metrics(tmp_path / "run")
  assert rows[1]["grad_norm"] == rows[2]["grad_norm"] == 0
  start = jax.device_get(init.params["model"])
  for x, y in zip(jax.tree.leaves(load_run(tmp_path / "run").params), jax.tree.leaves(start)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_frozen_predictor_trunk_trains_only_the_head_output_layer(data_dir, tmp_path):
  """train.freeze='llm,predictor_trunk': the predictor's backbone and head_in never move, its
  output layer does, and the logged predictor gradient norm is the output layer's alone."""
  from ifp_jax.infer.run_loader import load_run

  overrides = dict(train__freeze="llm,predictor_trunk", cpt__steps=2, sft__steps=0)
  overrides.update(train__log_every=1)
  init, _, _ = _trainer(data_dir, tmp_path / "init", **overrides).init_or_restore()
  _trainer(data_dir, tmp_path / "run", **overrides).run()
  start = jax.device_get(init.params["model"]["predictor"])
  after = load_run(tmp_path / "run").params["predictor"]
  assert set(start) >= {"backbone", "head_in", "head_out"}
  for part in start:
    moved = max(
      float(np.abs(np.asarray(x) - np.asarray(y)).max())
      for x, y in zip(jax.tree.leaves(after[part]), jax.tree.leaves(start[part]))
    )
    if part == "head_out":
      assert moved > 1e-4, part  # two Adam steps at the predictor LR
    else:
      assert moved == 0, part
  rows = read_metrics(tmp_path / "run")
  assert rows[1]["grad_norm_llm"] == 0 and rows[1]["grad_norm_predictor"] > 0
  # The stage's first batch, as text (data/batch_text.py), for reading what the model saw.
  seen = (tmp_path / "run" / "batches" / "cpt_step1.txt").read_text()
  assert "=== row 0:" in seen and "--- predictor input 0" in seen and "⟦" in seen
