"""Training-free selection (issue 13): GRIFFIN's rule, pruned generation, export, baselines.

The GRIFFIN reference is computed without our model: transformers runs the same weights and a
forward hook records each layer's MLP input x; numpy then applies the rule
Z = silu(x W_gate) * (x W_up), rows / ||row||, unit score = ||column|| over the valid tokens.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ifp_jax.infer import generate as gen
from ifp_jax.infer import griffin, run_loader
from ifp_jax.infer.pruned import PrunedRunner
from ifp_jax.io.export import writer
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.decoder import Decoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

LLM = LlamaConfig(
  vocab_size=64,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  initializer_range=0.2,
)
PROMPTS = [
  "Reverse the word.\nhello",
  "What is 12 + 30?",
  "Sort the letters of 'python' alphabetically.",
  "Write a haiku about the sea.",
]


def _numpy_griffin(mlp_inputs: list[np.ndarray], params, valid: np.ndarray) -> np.ndarray:
  """The rule on numpy: mlp_inputs[l] [B, T, D] -> scores [B, L, F]."""
  mlp = params["layers"]["mlp"]
  out = []
  for layer, x in enumerate(mlp_inputs):
    g = x @ np.asarray(mlp["gate_proj"]["kernel"][layer], np.float64)
    u = x @ np.asarray(mlp["up_proj"]["kernel"][layer], np.float64)
    z = g / (1 + np.exp(-g)) * u  # [B, T, F]
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    z = z * valid[:, :, None]
    out.append(np.sqrt((z**2).sum(1)))
  return np.stack(out, axis=1)


def test_griffin_selection_equals_numpy_rule(tmp_path):
  params = nn.unbox(Decoder(LLM).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  rng = np.random.default_rng(0)
  rows = [rng.integers(1, LLM.vocab_size, n).tolist() for n in (5, 13, 9)]
  k = 16
  got_scores = griffin.griffin_scores(LLM, params, rows, batch_size=2)
  got = griffin.griffin_units(LLM, params, rows, k, batch_size=2)

  writer.write_hf_model(LLM, params, tmp_path, overwrite=True)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float64)
  captured: dict[int, np.ndarray] = {}
  for i, layer in enumerate(model.model.layers):
    layer.mlp.register_forward_hook(
      lambda mod, inp, out, i=i: captured.__setitem__(i, inp[0].detach().numpy())
    )
  ids, valid = griffin.pad_rows(rows, pad_id=0)
  count_from = [2, 7, 0]  # score only the tail (the whole row is still the context)
  got_tail = griffin.griffin_scores(LLM, params, rows, batch_size=2, count_from=count_from)
  want_scores = np.zeros_like(got_scores, np.float64)
  want_tail = np.zeros_like(got_scores, np.float64)
  for b, r in enumerate(rows):  # one row at a time: no padding reaches transformers
    with torch.no_grad():
      model(torch.tensor([r]))
    x = [captured[i] for i in range(LLM.num_hidden_layers)]
    v = np.ones((1, len(r)))
    want_scores[b] = _numpy_griffin(x, params, v)[0]
    v[0, : count_from[b]] = 0
    want_tail[b] = _numpy_griffin(x, params, v)[0]
  np.testing.assert_allclose(got_scores, want_scores, rtol=2e-4, atol=1e-5)
  np.testing.assert_allclose(got_tail, want_tail, rtol=2e-4, atol=1e-5)
  assert not np.allclose(got_tail[0], got_scores[0], rtol=1e-3)
  with pytest.raises(ValueError, match="count_from"):
    griffin.griffin_scores(LLM, params, rows, count_from=[0, 13, 0])  # row 1 has 13 tokens
  want = np.sort(np.argsort(-want_scores, axis=-1, kind="stable")[..., :k], axis=-1)
  assert (got == want).mean() > 0.99  # near-ties may swap under f32 vs f64
  assert got.shape == (len(rows), LLM.num_hidden_layers, k)
  # Prompts pick different units (the selection depends on the input), and padding does not
  # count: the padded batch gives each row's unpadded score.
  assert not np.array_equal(got[0], got[1])
  alone = griffin.griffin_scores(LLM, params, rows[:1])
  np.testing.assert_allclose(got_scores[0], alone[0], rtol=1e-5, atol=1e-6)
  assert valid.sum() == sum(map(len, rows)) and ids.shape[1] % 16 == 0


def test_calibration_and_random_units():
  params = nn.unbox(Decoder(LLM).init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))["params"])
  rng = np.random.default_rng(1)
  rows = [rng.integers(1, LLM.vocab_size, n).tolist() for n in (7, 11, 4, 9)]
  scores = griffin.griffin_scores(LLM, params, rows)
  units = griffin.calibration_units(LLM, params, rows, 10)
  np.testing.assert_array_equal(units, griffin.top_units(scores.mean(0), 10))
  rand = griffin.random_units(LLM.num_hidden_layers, LLM.intermediate_size, 10, seed=3)
  assert rand.shape == (3, 10) and all(len(set(r)) == 10 for r in rand.tolist())
  mask = griffin.units_to_mask(rand, LLM.intermediate_size)
  assert mask.sum() == 30 and mask[0, rand[0]].all()
  with pytest.raises(ValueError, match="k=0"):
    griffin.top_units(scores, 0)


@pytest.fixture(scope="module")
def run(trained_run):
  return run_loader.load_run(trained_run)


def test_griffin_gathered_generation_equals_masked_full_model(run):
  runner = PrunedRunner(run, "griffin")
  got = runner.generate_ids(PROMPTS, max_new_tokens=10)
  assert runner.predictor_calls == 0 and runner.griffin_calls == len(PROMPTS)
  units = runner.kept(PROMPTS)
  assert runner.griffin_calls == len(PROMPTS)  # cached
  assert len({u.tobytes() for u in units}) > 1  # the row-wise gathered path ran
  masks = griffin.units_to_mask(units, run.ifp.llm.intermediate_size)
  ids, attn = gen.pad_prompts(
    [runner.encode_prompt(p, True) for p in PROMPTS], pad_id=run.tokenizer.pad_id, multiple=16
  )
  out = gen.generate(
    run.ifp.llm,
    run.params["llm"],
    ids,
    attn,
    max_new_tokens=10,
    ffn_masks=masks,
    eos_ids=list(run.tokenizer.stop_ids),
    pad_id=run.tokenizer.pad_id,
  )
  assert got == gen.trim(out.tokens, out.lengths)
  # The units are GRIFFIN's on the templated prompt the model reads.
  direct = griffin.griffin_units(
    run.ifp.llm,
    run.params["llm"],
    [runner.encode_prompt(p, True) for p in PROMPTS],
    run.ifp.k,
    pad_id=run.tokenizer.pad_id,
  )
  np.testing.assert_array_equal(units, direct)


def test_griffin_export_loads_in_transformers_and_generates_same(trained_run, run, tmp_path):
  from ifp_jax.io import export

  src = export.from_run(trained_run)
  prompt = PROMPTS[0]
  out = export.export_pruned(src, tmp_path / "g", instruction=prompt, mask_source="griffin")
  import json

  info = json.loads((out / export.writer.COMPLETE_MARKER).read_text())
  runner = PrunedRunner(run, "griffin")
  assert info["mask_source"] == "griffin"
  np.testing.assert_array_equal(np.asarray(info["kept_units"]), runner.kept([prompt])[0])
  ours = runner.generate_ids([prompt], max_new_tokens=10)[0]
  model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
  assert model.config.intermediate_size == run.ifp.k
  ids = runner.encode_prompt(prompt, True)
  with torch.no_grad():
    row = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids) :]
  theirs = row.tolist()
  stops = set(run.tokenizer.stop_ids)
  cut = next((i + 1 for i, t in enumerate(theirs) if t in stops), len(theirs))
  assert theirs[:cut] == ours
  with pytest.raises(export.ExportError, match="fold_soft_mask"):
    export.export_pruned(
      src, tmp_path / "h", instruction=prompt, mask_source="griffin", fold_soft_mask=True
    )


def test_griffin_runs_on_a_dense_run_at_its_model_k(run):
  """GRIFFIN needs only the LLM and k: a dense run (mask_kind 'none', e.g. the fine-tuned upper
  bound of benchmarks/repro_smollm2.py) prunes with it at its config's model.k; modes that need
  the run's own masks stay refused, as does a k that keeps every unit."""
  import dataclasses

  dense_ifp = dataclasses.replace(run.ifp, mask_kind="none", predictor=None)
  dense = dataclasses.replace(run, ifp=dense_ifp)
  got = PrunedRunner(dense, "griffin").kept(PROMPTS)
  np.testing.assert_array_equal(got, PrunedRunner(run, "griffin").kept(PROMPTS))
  assert got.shape[-1] == run.ifp.k < run.ifp.llm.intermediate_size
  with pytest.raises(ValueError, match="only modes 'full' and 'griffin' apply, not 'per_input'"):
    PrunedRunner(dense, "per_input")
  f = run.ifp.llm.intermediate_size
  wide = dataclasses.replace(dense, ifp=dataclasses.replace(dense_ifp, k=f))
  with pytest.raises(
    ValueError, match=rf"model.k = {f} units per layer, which must be in \(0, {f}\)"
  ):
    PrunedRunner(wide, "griffin")
