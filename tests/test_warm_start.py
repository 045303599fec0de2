"""Warm start of the masks from calibration statistics (ifp_jax/train/warm_start.py)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import train_utils as tu
from test_architectures import tiny_model

from ifp_jax.infer import griffin
from ifp_jax.train import warm_start
from ifp_jax.train.trainer import Trainer
from ifp_jax.train.validate import ConfigValidationError


def test_calibration_rows_cut_the_padding_after_the_last_counted_token():
  ids = np.arange(12).reshape(3, 4)
  weights = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]], np.float32)
  rows = warm_start.calibration_rows(iter([{"input_ids": ids, "loss_weights": weights}] * 2), 3)
  assert rows == [[0, 1], [8, 9, 10, 11], [0, 1]]


def test_warm_start_params_rank_units_as_the_scores_do():
  from ifp_jax.model.config import LlamaConfig
  from ifp_jax.model.ifp_model import IFPConfig

  llm = LlamaConfig(
    vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=2, num_key_value_heads=1,
  )  # fmt: skip
  scores = np.random.default_rng(0).random((3, 32)).astype(np.float32)
  want = griffin.top_units(scores, 8)
  static = warm_start.warm_start_params(
    IFPConfig(llm, mask_kind="static", k=8), scores, 2.0, (4, 96)
  )
  alpha = static["static_log_alpha"]
  np.testing.assert_array_equal(griffin.top_units(alpha, 8), want)
  np.testing.assert_allclose(alpha.mean(-1), 2.0, atol=1e-5)  # as mostly-on as the default init
  np.testing.assert_allclose(alpha.std(-1), 2.0, rtol=1e-4)  # scale in standard deviations
  ifp = IFPConfig(llm, predictor=llm.replace(num_hidden_layers=1), k=8)
  head = warm_start.warm_start_params(ifp, scores, 1.0, (4, 96))["predictor"]["head_out"]
  np.testing.assert_array_equal(griffin.top_units(head["bias"].reshape(3, 32), 8), want)
  assert head["kernel"].shape == (4, 96) and not head["kernel"].any()
  with pytest.raises(ValueError, match=r"shape \(2, 32\)"):
    warm_start.warm_start_params(ifp, scores[:2], 1.0, (4, 96))


def _warm_config(tmp_path, tmp_path_factory, mask_kind: str, warm: str, rows: int):
  """A 2-step CPT run from a tiny HF Llama with train.warm_start=warm over `rows` rows."""
  hf_dir = tiny_model(tmp_path / "hf", "llama", True, None)
  return tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    model__init_from=f"hf:{hf_dir}",
    model__predictor_init_layers=1,
    model__mask_kind=mask_kind,
    model__k=32,
    cpt__steps=2,
    sft__steps=0,
    train__batch_size=4,
    train__warm_start=warm,
    train__warm_start_rows=rows,
  )


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind", ["static", "soft_topk"])
def test_fresh_run_starts_from_the_calibration_static_mask(tmp_path, tmp_path_factory, mask_kind):
  """The initial masks of a warm-started run are the top k of the LLM's mean GRIFFIN score over
  the stream's first rows, computed here directly; the run then trains."""
  config = _warm_config(tmp_path, tmp_path_factory, mask_kind, "calibration", 6)
  trainer = Trainer(config, tmp_path / "run", devices=jax.devices()[:1])
  state, _, _ = trainer.init_or_restore()
  rows = warm_start.calibration_rows(trainer._iterator(trainer.stages[0]), 6)
  want = griffin.calibration_units(trainer.ifp.llm, trainer.pretrained["llm"], rows, 32)
  model = jax.device_get(state.params)["model"]
  if mask_kind == "static":
    logits = model["static_log_alpha"]
  else:
    logits = model["predictor"]["head_out"]["bias"].reshape(want.shape[0], -1)
    assert not model["predictor"]["head_out"]["kernel"].any()
  np.testing.assert_array_equal(griffin.top_units(logits, 32), want)
  summary = Trainer(config, tmp_path / "run", devices=jax.devices()[:1]).run()
  assert summary["stages"]["cpt"]["last_step"] == 2


def test_warm_start_needs_a_pretrained_llm(tmp_path_factory):
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory), mesh=(1, 1, 1), train__warm_start="calibration"
  )
  with pytest.raises(ConfigValidationError, match="model.init_from"):
    Trainer(config, tmp_path_factory.mktemp("warm"), devices=jax.devices()[:1])


def test_distill_examples_pair_each_predictor_input_with_the_tokens_its_mask_serves():
  ids = np.arange(16).reshape(2, 8)
  weights = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0]], np.float32)
  batch = {
    "input_ids": ids,
    "loss_weights": weights,
    "predictor_ids": np.stack([ids[:, :4] + 1])[0][:, None],  # [B, C=1, P=4]
    "predictor_lengths": np.array([[4], [3]]),
    "mask_index": np.zeros((2, 8), np.int32),
  }
  got = warm_start.distill_examples(iter([batch]), 5)
  assert got == [
    {"prompt": [1, 2, 3, 4], "row": list(range(8)), "count_from": 4},
    {"prompt": [9, 10, 11], "row": list(range(8, 14)), "count_from": 4},
  ]
  assert len(warm_start.distill_examples(iter([batch]), 1)) == 1


def test_fit_head_out_recovers_an_input_dependent_selection():
  """Targets that are a linear function of the activations: the fitted head selects what they
  select on held-out inputs, far better than the best single mask (the bias alone)."""
  rng = np.random.default_rng(0)
  n, hdim, L, F, k = 120, 8, 2, 40, 10
  h = rng.normal(size=(n, hdim))
  w = rng.normal(size=(hdim, L * F))
  y = h @ w + 0.3 * rng.normal(size=(1, L * F))
  kernel, bias, stats = warm_start.fit_head_out(h, y, k, L)
  assert kernel.shape == (hdim, L * F) and bias.shape == (L * F,)
  assert stats["heldout_overlap"] > 0.95 > 0.6 > stats["heldout_overlap_bias_only"]
  assert stats["ridge"] <= 0.1 and stats["heldout_inputs"] == n // 5
  pred = (h @ kernel + bias).reshape(n, L, F)
  assert warm_start.topk_overlap(pred, y.reshape(n, L, F), k) > 0.95
  # Targets that ignore the input: the kernel has nothing to add, the bias is the mean.
  const = np.broadcast_to(y[:1], y.shape)
  kernel, bias, stats = warm_start.fit_head_out(h, const, k, L)
  np.testing.assert_allclose(bias, y[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(kernel, 0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("center", [False, True])
def test_griffin_warm_start_makes_the_predictor_reproduce_the_fitted_scores(
  tmp_path, tmp_path_factory, center
):
  """A fresh soft_topk run with train.warm_start='griffin': the model's own predictor scores
  equal the distilled head's prediction computed here from the stream (so the warm start reads
  the prompt exactly as the predictor does), the masks differ between inputs, and it trains.
  With model.head_center the centre is the mean activation of the distillation inputs, the
  bias absorbs it (the same initial scores), and training never moves it."""
  from ifp_jax.model.ifp_model import IFPModel

  config = _warm_config(tmp_path, tmp_path_factory, "soft_topk", "griffin", 12)
  if center:
    config.model.head_center = True
    config.cpt.predictor_bias_lr = 0.1
  trainer = Trainer(config, tmp_path / "run", devices=jax.devices()[:1])
  state, _, _ = trainer.init_or_restore()
  stats = json.loads((tmp_path / "run" / "warm_start.json").read_text())
  assert stats["kind"] == "griffin" and stats["inputs"] == 12
  assert 0 < stats["heldout_overlap_bias_only"] <= 1 and 0 < stats["heldout_overlap"] <= 1
  batch = next(iter(trainer._iterator(trainer.stages[0])))
  overrides, _ = warm_start.griffin_warm_start(
    trainer.ifp,
    trainer.pretrained["llm"],
    trainer.pretrained["predictor"]["backbone"],
    trainer._iterator(trainer.stages[0], host=(0, 1)),
    n_rows=12,
    scale=1.0,
    seed=int(config.seed),
  )
  head = overrides["predictor"]
  model = jax.device_get(state.params)["model"]
  for layer in ("head_in", "head_out"):
    for name in ("kernel", "bias"):
      np.testing.assert_allclose(model["predictor"][layer][name], head[layer][name], atol=1e-6)
  c = head.get("head_center", 0.0)
  if center:
    np.testing.assert_allclose(model["predictor"]["head_center"], c, atol=1e-6)
    assert np.abs(c).max() > 1e-3
  scores = IFPModel(trainer.ifp).apply(
    {"params": model},
    batch["predictor_ids"],
    batch["predictor_lengths"],
    method=IFPModel.scores,
  )
  from ifp_jax.model import predictor

  feat = predictor.backbone_features(
    trainer.ifp.predictor,
    model["predictor"]["backbone"],
    batch["predictor_ids"][:, 0],
    batch["predictor_lengths"][:, 0],
  )
  h = jax.nn.gelu(feat @ head["head_in"]["kernel"] + head["head_in"]["bias"])
  want = ((h - c) @ head["head_out"]["kernel"] + head["head_out"]["bias"]).reshape(
    scores[:, 0].shape
  )
  np.testing.assert_allclose(np.asarray(scores[:, 0]), np.asarray(want), rtol=1e-4, atol=1e-4)
  units = griffin.top_units(np.asarray(scores[:, 0]), 32)
  assert not np.array_equal(units[0], units[1])  # input-dependent from step 0
  summary = Trainer(config, tmp_path / "run", devices=jax.devices()[:1]).run()
  assert summary["stages"]["cpt"]["last_step"] == 2
  if center:  # the centre is a constant; the bias trained at its own LR
    from ifp_jax.infer.run_loader import load_run

    trained = load_run(tmp_path / "run").params["predictor"]
    np.testing.assert_array_equal(trained["head_center"], model["predictor"]["head_center"])
    moved = np.abs(trained["head_out"]["bias"] - model["predictor"]["head_out"]["bias"]).max()
    assert moved > 0.05, moved  # 2 steps at LR 0.1 (warm-up 0 here), not the predictor's 1e-3


def test_griffin_warm_start_needs_a_predictor(tmp_path, tmp_path_factory):
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    model__init_from=f"hf:{tiny_model(tmp_path / 'hf', 'llama', True, None)}",
    model__mask_kind="static",
    train__warm_start="griffin",
  )
  with pytest.raises(ConfigValidationError, match="a predictor kind"):
    Trainer(config, tmp_path_factory.mktemp("warm"), devices=jax.devices()[:1])


def test_a_centred_head_needs_the_griffin_start_that_sets_its_centre(tmp_path, tmp_path_factory):
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    model__init_from=f"hf:{tiny_model(tmp_path / 'hf', 'llama', True, None)}",
    model__predictor_init_layers=1,
    model__head_center=True,
    train__warm_start="calibration",
  )
  with pytest.raises(ConfigValidationError, match="model.head_center"):
    Trainer(config, tmp_path_factory.mktemp("centre"), devices=jax.devices()[:1])
