"""run_loader: a training WORKDIR reads back as (IFP config, params, tokenizer)."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from ifp_jax.infer import run_loader
from ifp_jax.train.checkpointing import Checkpointer

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow


def test_load_run_matches_checkpoint(trained_run):
  run = run_loader.load_run(trained_run)
  assert run.step == 12 and run.ifp.mask_kind == "soft_topk" and run.ifp.k == 128
  assert run.tokenizer.vocab_size <= run.ifp.llm.vocab_size  # the vocab is padded for sharding
  embed = run.params["llm"]["embed_tokens"]["embedding"]
  assert embed.shape == (run.ifp.llm.vocab_size, run.ifp.llm.hidden_size)
  assert float(np.abs(np.asarray(embed)).max()) > 0
  assert set(run.params) == {"llm", "predictor"}
  # Exactly the trained values: the same leaf read through the full-state Checkpointer.
  ckpt = Checkpointer(trained_run / "checkpoints", async_save=False)
  raw = ckpt.manager.restore(run.step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
  ckpt.close()
  np.testing.assert_array_equal(
    np.asarray(embed), raw.state["params"]["model"]["llm"]["embed_tokens"]["embedding"]
  )


def test_load_run_errors(tmp_path, trained_run):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    run_loader.load_run(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
    run_loader.load_run(tmp_path)
  with pytest.raises(FileNotFoundError, match="no step 5"):
    run_loader.load_run(trained_run, step=5)
  with pytest.raises(ValueError, match="incompatible IFP config"):
    run_loader.ifp_config_from_meta({"ifp": {"llm": {"bogus": 1}}})
