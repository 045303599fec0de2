"""benchmarks/repro_sft_eval.py: regime (b)'s per-item paired differences and page section, on
launch.eval's output layout (results.json + samples/VARIANT/BENCHMARK.jsonl) written here."""

import json
import math
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import repro_sft_eval as rse  # noqa: E402

# Per variant: skills correct, skills answer NLL, math score, math answer NLL, MMLU prediction.
ITEMS = {
  "per_input": ([1, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 0.0], [2.0, 2.0, 2.0], "AABB"),
  "per_task": ([1, 0, 0, 1], [1.5, 2.5, 3.0, 4.5], [1.0, 0.0, 0.0], [2.5, 2.0, 2.5], "ABBB"),
  "static_table": ([0, 1, 0, 0], [2.0, 2.0, 4.0, 4.0], [0.0, 0.5, 0.0], [3.0, 3.0, 3.0], "BBBB"),
  "griffin_ft": ([0, 0, 0, 1], [3.0, 3.0, 3.0, 5.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0], "CCCC"),
  "full_ft": ([1, 1, 1, 1], [0.5, 1.0, 1.5, 2.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "AABB"),
}
GOLD = "AABC"


def _write(out: pathlib.Path) -> None:
  results, variants = {}, {}
  for v, (correct, nll, score, mnll, letters) in ITEMS.items():
    d = out / "samples" / v
    d.mkdir(parents=True)
    rows = [{"correct": bool(c), "answer_nll": x} for c, x in zip(correct, nll)]
    (d / "skills.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows = [{"score": s, "answer_nll": x} for s, x in zip(score, mnll)]
    (d / "math.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for shots in (0, 5):
      rows = [
        {"id": f"q{i}", "prediction": p, "answer": a} for i, (p, a) in enumerate(zip(letters, GOLD))
      ]
      (d / f"mmlu_{shots}shot.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = sum(p == a for p, a in zip(letters, GOLD)) / 4
    results[v] = {"mmlu_5shot": {"groups": {"math": {"score": acc, "n": 4}}}}
    variants[v] = {"step": 80}
  (out / "results.json").write_text(json.dumps({"results": results, "variants": variants}))


def test_means_paired_differences_and_page(tmp_path):
  _write(tmp_path)
  request = {"variants": "...", "limit": "skills:4,math:3,mmlu:4"}
  rec = rse.summarise(tmp_path, request, {n: tmp_path / n for n in rse.RUNS})
  assert rec["n"] == {
    "skills exact match": 4,
    "skills answer NLL": 4,
    "math score": 3,
    "math answer NLL": 3,
    "MMLU 0-shot acc": 4,
    "MMLU 5-shot acc": 4,
  }
  assert rec["mean"]["skills exact match"]["per_input"] == 0.75
  assert rec["mean"]["MMLU 5-shot acc"]["per_input"] == 0.75  # A A B B vs A A B C
  assert rec["mean"]["MMLU 5-shot acc"]["griffin_ft"] == 0.25
  # per_input - static_table on skills NLL: differences -1, 0, -1, 0 -> mean -0.5, se 0.2887
  p = rec["paired"]["skills answer NLL"]["per_input-static_table"]
  assert p["mean"] == pytest.approx(-0.5) and p["se"] == pytest.approx(math.sqrt(1 / 3) / 2)
  p = rec["paired"]["math answer NLL"]["per_input-griffin_ft"]
  assert p["mean"] == pytest.approx(-2.0) and p["se"] == 0.0
  assert rec["mmlu_5shot_groups"]["full_ft"] == {"math": {"score": 0.75, "n": 4}}
  page = "\n".join(rse.page_lines(rec))
  assert "| per_input | 0.750 | 2.500 | 0.500 | 2.000 | 0.750 | 0.750 |" in page
  assert "| skills answer NLL | -0.500 +- 0.577 |" in page
  # Verdicts read the direction of each measure: lower NLL, higher accuracy is better.
  assert "- math answer NLL: per_input better than static_table (beyond 2 s.e.)" in page
  assert "- skills exact match: per_input better than static_table (within 2 s.e.)" in page
  assert "| full_ft | 0.75 |" in page  # MMLU by group


def test_unfinished_runs_are_named(tmp_path):
  (tmp_path / "b_joint_full_sft").mkdir()
  with pytest.raises(RuntimeError, match="SFT runs not trained: .*b_joint_full_sft"):
    rse.run_eval(tmp_path, "skills:1", reuse=True, timings={})
