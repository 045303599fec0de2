"""Mask analysis on known inputs: overlap matrices, entropies, never-selected units, plots."""

import json

import numpy as np
import pytest

from ifp_jax.evals import masks_analysis as ma

L, F, K = 3, 12, 4


def masks_with(units, n):
  m = np.zeros((n, L, F), bool)
  m[:, :, list(units)] = True
  return m


def test_identical_masks():
  same = {"a": masks_with(range(4), 3), "b": masks_with(range(4), 5)}
  ov = ma.overlap_matrices(same, K)
  assert ov.shape == (L, 2, 2)
  np.testing.assert_allclose(ov, 1.0)
  st = ma.selection_stats(np.concatenate(list(same.values())), K)
  np.testing.assert_allclose(st["binary_entropy"], 0.0)
  np.testing.assert_allclose(st["usage_entropy"], np.log2(K) / np.log2(F))
  assert st["never_selected"].tolist() == [F - K] * L


def test_disjoint_and_half_overlapping_domains():
  doms = {
    "a": masks_with(range(0, 4), 2),
    "b": masks_with(range(4, 8), 2),
    "c": masks_with(range(2, 6), 2),
  }
  ov = ma.overlap_matrices(doms, K)
  np.testing.assert_allclose(ov[:, 0, 1], 0.0)
  np.testing.assert_allclose(ov[:, 0, 2], 0.5)
  np.testing.assert_allclose(ov[:, 1, 2], 0.5)
  np.testing.assert_allclose(ov, np.transpose(ov, (0, 2, 1)))
  st = ma.selection_stats(np.concatenate(list(doms.values())), K)
  assert st["never_selected"].tolist() == [F - 8] * L
  # Units 0,1 and 6,7: p=1/3; units 2..5: p=2/3 -> binary entropy H(1/3) on 8 of 12 units.
  h = -(1 / 3 * np.log2(1 / 3) + 2 / 3 * np.log2(2 / 3))
  np.testing.assert_allclose(st["binary_entropy"], h * 8 / F)


def test_overlap_matches_brute_force():
  rng = np.random.default_rng(0)

  def rand(n):
    m = np.zeros((n, L, F), bool)
    for i in range(n):
      for layer in range(L):
        m[i, layer, rng.choice(F, K, replace=False)] = True
    return m

  doms = {"a": rand(4), "b": rand(3)}
  ov = ma.overlap_matrices(doms, K)
  for i, a in enumerate(doms):
    for j, b in enumerate(doms):
      pairs = [
        (x, y) for x in range(len(doms[a])) for y in range(len(doms[b])) if not (a == b and x == y)
      ]
      want = np.mean([(doms[a][x] & doms[b][y]).sum(-1) / K for x, y in pairs], axis=0)
      np.testing.assert_allclose(ov[:, i, j], want)


def test_analyze_write_and_errors(tmp_path):
  doms = {"a": masks_with(range(4), 2), "b": masks_with(range(4, 8), 2)}
  summary = ma.analyze(doms, K)
  assert summary["within_domain_overlap"] == [1.0] * L
  assert summary["cross_domain_overlap"] == [0.0] * L
  files = ma.write(summary, tmp_path)
  assert json.loads(open(files["json"]).read())["overlap"] == summary["overlap"]
  for key in ("overlap_png", "layers_png"):
    assert open(files[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  bad = masks_with(range(5), 2)
  with pytest.raises(ValueError, match="exactly k=4"):
    ma.overlap_matrices({"a": bad}, K)
  with pytest.raises(ValueError, match=r"hard masks \[N > 0, layers, d_ff\]"):
    ma.selection_stats(np.zeros((L, F)), K)
