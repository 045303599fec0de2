"""launch.eval end to end on the trained_run fixture, and its errors."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import train_utils as tu

from ifp_jax.evals import suite

# Every test here trains a model or spawns processes.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
LIMITS = "perplexity:8,skills:1,math:1,humaneval:1,mmlu:1"


@pytest.fixture(scope="module")
def record(trained_run, tmp_path_factory):
  out = tmp_path_factory.mktemp("eval_out")
  return suite.evaluate(
    trained_run,
    limit=LIMITS,
    max_new_tokens=8,
    batch_size=16,
    variants=f"full,per_input,per_task,baseline:again={trained_run}@per_task",
    out_dir=out,
  ), out


def test_results_cover_every_variant_and_benchmark(record):
  rec, out = record
  on_disk = json.loads((out / "results.json").read_text())
  assert set(on_disk["results"]) == {"full", "per_input", "per_task", "again"}
  want = {"perplexity", "skills", "math", "humaneval", "mmlu_0shot", "mmlu_5shot"}
  n_expected = {
    "perplexity": 8,
    "skills": 14,
    "math": 2,
    "humaneval": 1,
    "mmlu_0shot": 7,
    "mmlu_5shot": 7,
  }
  for variant, per in on_disk["results"].items():
    assert set(per) == want, variant
    for name, res in per.items():
      assert res["n"] == n_expected[name], (variant, name)
      assert isinstance(res["score"], float) and res["seconds"] >= 0
    assert per["perplexity"]["score"] > 1 and per["perplexity"]["tokens"] > 0
    assert set(per["mmlu_5shot"]["groups"]) == {
      "physics",
      "math",
      "history",
      "health",
      "business",
      "economics",
      "other",
    }
    assert {"domain:arithmetic", "add", "python_expr"} <= set(per["skills"]["groups"])
    assert set(per["math"]["groups"]) == {"basic_arithmetic", "gsm_symbolic"}
    # The graded skills measure: per-token NLL of the gold answer, per domain and skill.
    nll = per["skills"]["answer_nll_groups"]
    assert {"domain:strings", "reverse"} <= set(nll) and nll["reverse"]["n"] == 1
    assert 0 < per["skills"]["answer_nll"] < 20
    # ... and of reasoning-gym's gold answers, per task.
    assert set(per["math"]["answer_nll_groups"]) == {"basic_arithmetic", "gsm_symbolic"}
    assert 0 < per["math"]["answer_nll"] < 20
  v = on_disk["variants"]
  assert v["full"]["ffn_units"] == v["full"]["d_ff"] == 384 and v["per_input"]["ffn_units"] == 128
  assert v["again"]["mode"] == "per_task"
  # The same checkpoint evaluated twice in the same mode gives the same numbers.
  for name in want:
    assert (
      on_disk["results"]["again"][name]["score"] == on_disk["results"]["per_task"][name]["score"]
    )
  # Masks change the model: the masked and the full perplexities differ.
  assert (
    on_disk["results"]["full"]["perplexity"]["score"]
    != on_disk["results"]["per_input"]["perplexity"]["score"]
  )
  md = (out / "results.md").read_text()
  assert "| per_task |" in md and "mmlu_5shot by group" in md
  assert "skills answer_nll by group" in md and "math answer_nll by group" in md
  math_rows = (out / "samples" / "per_task" / "math.jsonl").read_text().splitlines()
  assert all(json.loads(r)["answer_nll"] > 0 for r in math_rows)
  for f in ("scores.png", "groups_skills.png", "mask_overlap.png", "mask_layers.png"):
    assert (out / f).read_bytes()[:4] == b"\x89PNG"
  ma = on_disk["mask_analysis"]["summary"]
  assert ma["layers"] == 2 and len(ma["overlap"]) == 2
  assert len(ma["domains"]) == len(ma["overlap"][0]) == 7
  samples = (out / "samples" / "per_task" / "skills.jsonl").read_text().splitlines()
  assert len(samples) == 14 and "prediction" in json.loads(samples[0])


def test_request_errors(trained_run, tmp_path):
  with pytest.raises(ValueError, match=r"unknown benchmark\(s\) \['gsm8k'\]"):
    suite.evaluate(trained_run, benchmarks="skills,gsm8k", out_dir=tmp_path)
  with pytest.raises(ValueError, match="unknown variant 'pruned'"):
    suite.evaluate(trained_run, variants="full,pruned", out_dir=tmp_path)
  with pytest.raises(ValueError, match="expected N or BENCHMARK:N"):
    suite.parse_limits("skills:x", ["skills"])
  assert suite.parse_limits("3,mmlu:0", ["skills", "mmlu"]) == {"skills": 3, "mmlu": None}
  assert suite.parse_variants("full,baseline:d=/x/run@full,baseline:e=/y@z", "soft_topk") == [
    ("full", None, "full"),
    ("d", "/x/run", "full"),
    ("e", "/y@z", None),
  ]
  assert [n for n, _, _ in suite.parse_variants("", "none")] == ["full"]
  bad = tmp_path / "instr.json"
  bad.write_text(json.dumps({"not_a_task": "Do it."}))
  with pytest.raises(ValueError, match="unknown task 'not_a_task'"):
    suite.evaluate(trained_run, instructions=str(bad), out_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    suite.evaluate(tmp_path / "missing_run", out_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    suite.evaluate(trained_run, variants=f"full,baseline:b={tmp_path / 'nope'}", out_dir=tmp_path)


def test_incompatible_config(trained_run, tmp_path):
  broken = tmp_path / "broken_run"
  shutil.copytree(trained_run / "checkpoints", broken / "checkpoints")
  for meta_file in (broken / "checkpoints").glob("*/meta/metadata"):
    meta = json.loads(meta_file.read_text())
    del meta["ifp"]["k"]
    meta_file.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="incompatible IFP config"):
    suite.evaluate(broken, out_dir=tmp_path / "out")


def _cli(*args):
  env = tu.cli_env(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "launch.eval", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_cli_runs_and_reports(tmp_path, trained_run):
  out = tmp_path / "o"
  p = _cli(
    f"--workdir={trained_run}",
    "--benchmarks=skills",
    "--limit=1",
    "--variants=per_task",
    "--max_new_tokens=4",
    "--nomask_analysis",
    f"--out_dir={out}",
  )
  assert p.returncode == 0, p.stderr[-2000:]
  rec = json.loads((out / "results.json").read_text())
  assert rec["results"]["per_task"]["skills"]["n"] == 14
  assert rec["mask_analysis"] == {"skipped": "--nomask_analysis"}
  assert "| per_task |" in p.stdout and "[eval] [" in p.stderr  # table and progress bar


def test_cli_errors_are_clear(tmp_path, trained_run):
  p = _cli(f"--workdir={tmp_path}", "--out_dir", str(tmp_path / "o"))
  assert p.returncode != 0 and "launch.eval: error:" in p.stderr
  assert "holds no checkpoint" in p.stderr and "Traceback" not in p.stderr
  p = _cli(
    f"--workdir={trained_run}", "--benchmarks=skills,bogus", "--out_dir", str(tmp_path / "o")
  )
  assert p.returncode != 0 and "unknown benchmark(s) ['bogus']" in p.stderr
