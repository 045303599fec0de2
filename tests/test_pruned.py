"""Pruned inference: gathered width-k generation == the masked full model, token for token."""

import numpy as np
import pytest

from ifp_jax.data import skills
from ifp_jax.infer import generate as gen
from ifp_jax.infer import instruction_masks as instruct_masks
from ifp_jax.infer import run_loader
from ifp_jax.infer.pruned import PrunedRunner, cut_at_stop

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(trained_run):
  return run_loader.load_run(trained_run)


@pytest.fixture(scope="module")
def prompts():
  return [ex["prompt"] for ex in skills.generate("eval", 20, seed=3)]


def _masked_full_generation(run, prompts, instructions, max_new_tokens):
  """Reference: the full-width LLM with hard masks [B, L, F] from the predictor."""
  masks, _ = instruct_masks.predict_masks(
    run.ifp, run.params, run.tokenizer, instructions, instruct_masks.max_prompt_len(run.meta)
  )
  runner = PrunedRunner(run, "full")
  ids, attn = gen.pad_prompts(
    [runner.encode_prompt(p, True) for p in prompts], pad_id=run.tokenizer.pad_id, multiple=16
  )
  out = gen.generate(
    run.ifp.llm,
    run.params["llm"],
    ids,
    attn,
    max_new_tokens=max_new_tokens,
    ffn_masks=masks,
    eos_ids=list(run.tokenizer.stop_ids),
    pad_id=run.tokenizer.pad_id,
  )
  return gen.trim(out.tokens, out.lengths), masks


def test_per_input_gathered_equals_masked_full_model(run, prompts):
  runner = PrunedRunner(run, "per_input")
  got = runner.generate_ids(prompts, max_new_tokens=12)
  want, masks = _masked_full_generation(run, prompts, prompts, 12)
  assert got == want
  # The 20 prompts really had different masks (so the row-wise gathered path ran).
  assert len({m.tobytes() for m in masks}) > 1
  assert all(len(r) >= 1 for r in got)


def test_per_task_masks_are_computed_once_and_reused(run, prompts):
  runner = PrunedRunner(run, "per_task")
  task = instruct_masks.task_instruction("arithmetic")
  first = runner.generate_ids(prompts[:10], instructions=task, max_new_tokens=8)
  second = runner.generate_ids(prompts[10:], instructions=task, max_new_tokens=8)
  assert runner.predictor_calls == 1
  want, _ = _masked_full_generation(run, prompts, [task] * 20, 8)
  assert first + second == want
  with pytest.raises(ValueError, match="needs the task instruction"):
    runner.generate(prompts[:1])


def test_loglikelihood_matches_token_by_token_sum(run):
  runner = PrunedRunner(run, "per_input")
  ctx, conts = "Add the two numbers.\n3, 4", ["7", "12"]
  got = runner.loglikelihood([ctx, ctx], conts, chat=True)
  # Reference: the masked full model's log-probs of each continuation token, summed.
  import jax
  import jax.numpy as jnp

  masks, _ = instruct_masks.predict_masks(
    run.ifp, run.params, run.tokenizer, [ctx], instruct_masks.max_prompt_len(run.meta)
  )
  from ifp_jax.model.decoder import Decoder

  for cont, value in zip(conts, got):
    c = runner.encode_prompt(ctx, True)
    ids = jnp.asarray([c + run.tokenizer.encode(cont)])
    logits = (
      Decoder(run.ifp.llm)
      .apply({"params": run.params["llm"]}, ids, ffn_masks=jnp.asarray(masks))
      .logits
    )
    logp = jax.nn.log_softmax(logits[0, :-1], -1)
    want = float(sum(logp[t - 1, ids[0, t]] for t in range(len(c), ids.shape[1])))
    assert value == pytest.approx(want, rel=1e-4, abs=1e-4)
  assert got[0] != got[1]


def test_full_mode_and_errors(run, prompts):
  full = PrunedRunner(run, "full")
  assert len(full.generate(prompts[:2], max_new_tokens=4)) == 2
  with pytest.raises(ValueError, match="no kept-unit indices"):
    full.kept(["x"])
  with pytest.raises(ValueError, match="mode="):
    PrunedRunner(run, "half")
  with pytest.raises(ValueError, match="2 instructions for 1 prompts"):
    PrunedRunner(run, "per_input").generate(prompts[:1], instructions=["a", "b"])
  assert cut_at_stop("abc\ndef STOP x", ["STOP", "\n"]) == "abc"
  assert cut_at_stop("abc", ["zz"]) == "abc"
  np.testing.assert_array_equal(
    PrunedRunner(run, "per_task").kept(["a"]).shape, (1, run.ifp.llm.num_hidden_layers, run.ifp.k)
  )


def test_launch_generate_with_workdir(trained_run, run):
  import subprocess
  import sys

  prompt = "Reverse the word.\nabc"
  res = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.generate",
      f"--workdir={trained_run}",
      f"--prompt={prompt}",
      "--max_new_tokens=6",
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  want = PrunedRunner(run, "per_input").generate([prompt], max_new_tokens=6)[0]
  assert res.stdout == want + "\n"
  assert f"per_input, {run.ifp.k}/{run.ifp.llm.intermediate_size} FFN units" in res.stderr
  bad = subprocess.run(
    [sys.executable, "-m", "launch.generate", f"--workdir={trained_run}/x", "--prompt=hi"],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert bad.returncode != 0 and "does not exist" in bad.stderr
