"""What the predictor selects: per-layer mask overlap between domains (the paper's Figure 3),
per-layer selection entropy and units never selected.

Inputs are hard masks [N, L, F] (exactly k ones per layer) of prompts grouped by domain.
  overlap[l, a, b]  mean over prompt pairs (x in a, y in b, x != y) of |m_x[l] & m_y[l]| / k:
                    1 = the same units, k/F = what independent random masks share. Computed
                    exactly from per-domain unit counts (no N^2 loop).
  binary_entropy[l] mean over units of H(p_f) in bits, p_f = fraction of prompts selecting
                    unit f: 0 when every prompt gets the same mask (input-independent layer).
  usage_entropy[l]  H(p / k) / log2(F): how evenly selections spread over all F units; 1 =
                    uniform, log(k)/log(F) = always the same k units.
  never_selected[l] units no analysed prompt selects (prunable for these domains).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from ifp_jax.infer import instruction_masks as instruct_masks


def check_masks(masks: np.ndarray, k: int | None = None, name: str = "masks") -> np.ndarray:
  m = np.asarray(masks) != 0
  if m.ndim != 3 or m.shape[0] == 0:
    raise ValueError(f"{name}: expected hard masks [N > 0, layers, d_ff], got {masks.shape}")
  counts = m.sum(-1)
  if k is not None and not (counts == k).all():
    raise ValueError(
      f"{name}: every layer must keep exactly k={k} units; got counts "
      f"{sorted(set(counts.ravel().tolist()))[:8]}"
    )
  return m


def overlap_matrices(masks_by_domain: Mapping[str, np.ndarray], k: int) -> np.ndarray:
  """overlap [L, D, D] (see module doc); a domain needs >= 2 prompts for its diagonal."""
  doms = list(masks_by_domain)
  m = {d: check_masks(masks_by_domain[d], k, d) for d in doms}
  counts = {d: m[d].sum(0, dtype=np.float64) for d in doms}  # [L, F] selections per unit
  n_layers = next(iter(counts.values())).shape[0]
  out = np.zeros((n_layers, len(doms), len(doms)))
  for i, a in enumerate(doms):
    for j, b in enumerate(doms):
      shared = (counts[a] * counts[b]).sum(-1)  # sum over pairs of |m_x & m_y|, per layer
      pairs = len(m[a]) * len(m[b])
      if a == b:  # drop self-pairs (each shares all k units with itself)
        shared = shared - len(m[a]) * k
        pairs = len(m[a]) * (len(m[a]) - 1)
      out[:, i, j] = shared / (pairs * k) if pairs else np.nan
  return out


def selection_stats(masks: np.ndarray, k: int) -> dict[str, np.ndarray]:
  """Per-layer binary_entropy, usage_entropy, never_selected over all `masks` [N, L, F]."""
  m = check_masks(masks, k)
  f = m.shape[-1]
  p = m.mean(0, dtype=np.float64)  # [L, F]
  with np.errstate(divide="ignore", invalid="ignore"):
    hb = -(np.where(p > 0, p * np.log2(p), 0) + np.where(p < 1, (1 - p) * np.log2(1 - p), 0))
    q = p / k
    hu = -np.where(q > 0, q * np.log2(q), 0).sum(-1) / np.log2(f)
  return {
    "binary_entropy": hb.mean(-1),
    "usage_entropy": hu,
    "never_selected": (p == 0).sum(-1).astype(np.int64),
  }


def analyze(masks_by_domain: Mapping[str, np.ndarray], k: int) -> dict[str, Any]:
  """Everything above as JSON-able lists, plus within/cross-domain means per layer."""
  doms = list(masks_by_domain)
  ov = overlap_matrices(masks_by_domain, k)
  all_masks = np.concatenate([np.asarray(masks_by_domain[d]) for d in doms])
  stats = selection_stats(all_masks, k)
  d = len(doms)
  diag = np.array([np.nanmean(np.diagonal(o)) for o in ov])
  off = (
    np.array([np.nanmean(o[~np.eye(d, dtype=bool)]) for o in ov])
    if d > 1
    else np.full(len(ov), np.nan)
  )
  n_layers, f = all_masks.shape[1:]
  return {
    "domains": doms,
    "prompts": {x: int(len(masks_by_domain[x])) for x in doms},
    "layers": int(n_layers),
    "d_ff": int(f),
    "k": int(k),
    "random_overlap": k / f,
    "overlap": ov.tolist(),
    "within_domain_overlap": diag.tolist(),
    "cross_domain_overlap": off.tolist(),
    **{name: v.tolist() for name, v in stats.items()},
  }


def domain_masks(
  run: Any, prompts_by_domain: Mapping[str, Sequence[str]], batch: int = 64
) -> dict[str, np.ndarray]:
  """Hard masks [N, L, F] per domain, the predictor reading each prompt (per-input)."""
  max_len = instruct_masks.max_prompt_len(run.meta)
  out = {}
  for dom, prompts in prompts_by_domain.items():
    parts = [
      instruct_masks.predict_masks(
        run.ifp, run.params, run.predictor_tokenizer, list(prompts[i : i + batch]), max_len
      )[0]
      for i in range(0, len(prompts), batch)
    ]
    out[dom] = np.concatenate(parts).astype(bool)
  return out


def _plt():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def plot_overlap(
  analysis: Mapping[str, Any], path: str | pathlib.Path, max_panels: int = 16
) -> pathlib.Path:
  """Heatmaps of the overlap matrix of each layer (evenly spaced layers if there are many)."""
  plt = _plt()
  ov, doms = np.asarray(analysis["overlap"]), analysis["domains"]
  layers = np.unique(np.linspace(0, len(ov) - 1, min(len(ov), max_panels)).round().astype(int))
  cols = min(4, len(layers))
  rows = -(-len(layers) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1, 3.0 * rows), squeeze=False)
  for ax in axes.ravel()[len(layers) :]:
    ax.axis("off")
  im = None
  for panel, (ax, layer) in enumerate(zip(axes.ravel(), layers)):
    im = ax.imshow(ov[layer], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"layer {layer}", fontsize=9)
    ax.set_xticks(range(len(doms)), doms, rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(len(doms)), doms if panel % cols == 0 else [], fontsize=7)
    if len(doms) <= 8:
      for (i, j), v in np.ndenumerate(ov[layer]):
        ax.text(
          j,
          i,
          f"{v:.2f}",
          ha="center",
          va="center",
          fontsize=6,
          color="white" if v < 0.6 else "black",
        )
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="mask overlap (|A&B| / k)")
  fig.suptitle(
    f"FFN mask overlap between domains (k={analysis['k']} of {analysis['d_ff']}; "
    f"random ~ {analysis['random_overlap']:.2f})"
  )
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return pathlib.Path(path)


def plot_layer_stats(analysis: Mapping[str, Any], path: str | pathlib.Path) -> pathlib.Path:
  """Per layer: within- vs cross-domain overlap, entropies, and units never selected."""
  plt = _plt()
  x = np.arange(analysis["layers"])
  fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.6))
  a1.plot(x, analysis["within_domain_overlap"], "o-", label="within domain")
  a1.plot(x, analysis["cross_domain_overlap"], "s-", label="across domains")
  a1.axhline(analysis["random_overlap"], color="gray", ls="--", label="random masks")
  a1.set(xlabel="layer", ylabel="overlap", ylim=(0, 1.05), title="mask overlap")
  a1.legend(fontsize=8)
  a2.plot(x, analysis["binary_entropy"], "o-", label="mean unit entropy (bits)")
  a2.plot(x, analysis["usage_entropy"], "s-", label="usage entropy / log2 F")
  a2.set(xlabel="layer", ylim=(0, 1.05), title="selection entropy")
  a2.legend(fontsize=8)
  a3.bar(x, analysis["never_selected"])
  a3.set(xlabel="layer", ylabel="units", title=f"never selected (of {analysis['d_ff']})")
  from matplotlib.ticker import MaxNLocator

  for ax in (a1, a2, a3):
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return pathlib.Path(path)


def write(analysis: Mapping[str, Any], out_dir: str | pathlib.Path) -> dict[str, str]:
  """masks_analysis.json + the two PNGs in `out_dir`; returns their paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  files = {
    "json": out_dir / "masks_analysis.json",
    "overlap_png": out_dir / "mask_overlap.png",
    "layers_png": out_dir / "mask_layers.png",
  }
  files["json"].write_text(json.dumps(analysis, indent=1))
  plot_overlap(analysis, files["overlap_png"])
  plot_layer_stats(analysis, files["layers_png"])
  return {k: str(v) for k, v in files.items()}
