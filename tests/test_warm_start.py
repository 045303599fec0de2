"""Warm start of the masks from calibration statistics (ifp_jax/train/warm_start.py)."""

from __future__ import annotations

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


@pytest.mark.slow
@pytest.mark.parametrize("mask_kind", ["static", "soft_topk"])
def test_fresh_run_starts_from_the_calibration_static_mask(tmp_path, tmp_path_factory, mask_kind):
  """The initial masks of a warm-started run are the top k of the LLM's mean GRIFFIN score over
  the stream's first rows, computed here directly; the run then trains."""
  hf_dir = tiny_model(tmp_path / "hf", "llama", True, None)
  config = tu.small_config(
    tu.shared_data_dir(tmp_path_factory),
    mesh=(1, 1, 1),
    model__init_from=f"hf:{hf_dir}",
    model__predictor_init_layers=1,
    model__mask_kind=mask_kind,
    model__k=32,
    cpt__steps=2,
    sft__steps=0,
    train__batch_size=4,
    train__warm_start="calibration",
    train__warm_start_rows=6,
  )
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
