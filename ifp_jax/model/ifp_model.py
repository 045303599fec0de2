"""IFPModel = sparsity predictor -> per-layer FFN masks -> masked decoder.

Mask kinds (`IFPConfig.mask_kind`):
  soft_topk      predictor scores -> SoftTopK (exactly k units per layer, values in (0, 1]);
                 eval: hard top-k.
  hard_concrete  predictor scores are HardConcrete log-alphas (sampled in training, budget via the
                 Lagrangian term); eval: the k largest log-alphas per layer.
  static         one learned log-alpha [L, d_ff] for all inputs (the static pruning baseline).
  static_soft_topk  one learned score table [L, d_ff] for all inputs through SoftTopK, as IFP's
                 scores are (the static control of IFP with the same mask machinery); eval:
                 hard top-k.
  none           dense model, no predictor.
What each kind uses (masks at all, a predictor, HardConcrete gates) is `MASK_KIND_TABLE`: code
asks `IFPConfig.has_masks / uses_predictor / hard_concrete`, never a list of kind names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ifp_jax.data.batch import Batch, ModelInputs
from ifp_jax.model import masking
from ifp_jax.model.config import LlamaConfig, PredictorHeadConfig
from ifp_jax.model.decoder import Decoder, KVCache
from ifp_jax.model.layers import constrain
from ifp_jax.model.predictor import SparsityPredictor

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MaskKind:
  """What a mask kind is made of; the one place code asks "which kinds do X"."""

  name: str
  has_masks: bool  # False: dense model, no FFN masks at all
  uses_predictor: bool  # masks depend on the input: predictor backbone + head
  hard_concrete: bool  # HardConcrete gates: log-alphas, sampled in training, Lagrangian budget


MASK_KIND_TABLE: dict[str, MaskKind] = {
  k.name: k
  for k in (
    MaskKind("soft_topk", has_masks=True, uses_predictor=True, hard_concrete=False),
    MaskKind("hard_concrete", has_masks=True, uses_predictor=True, hard_concrete=True),
    MaskKind("static", has_masks=True, uses_predictor=False, hard_concrete=True),
    MaskKind("static_soft_topk", has_masks=True, uses_predictor=False, hard_concrete=False),
    MaskKind("none", has_masks=False, uses_predictor=False, hard_concrete=False),
  )
}
MASK_KINDS = tuple(MASK_KIND_TABLE)


def mask_kind(name: str) -> MaskKind:
  """The table row of mask kind `name`; ValueError for an unknown one."""
  if name not in MASK_KIND_TABLE:
    raise ValueError(f"mask_kind={name!r}; expected one of {MASK_KINDS}")
  return MASK_KIND_TABLE[name]


@dataclasses.dataclass(frozen=True)
class IFPConfig:
  llm: LlamaConfig
  # Predictor backbone; None only for mask kinds static / none. Its own architecture and vocab
  # (a predictor with its own tokenizer); the head's input size follows its hidden size.
  predictor: LlamaConfig | None = None
  head: PredictorHeadConfig = PredictorHeadConfig()
  mask_kind: str = "soft_topk"
  k: int = 64  # kept FFN units per layer (uniform over layers)
  eps: float = 0.1  # SoftTopK temperature
  # HardConcrete / static: initial log-alpha offset (P(unit on) ~ 0.95 at 2.0).
  hc_init_log_alpha: float = 2.0

  def __post_init__(self):
    kind = mask_kind(self.mask_kind)
    f = self.llm.intermediate_size
    if kind.has_masks and not 1 <= self.k <= f:
      raise ValueError(f"k={self.k} must be in [1, d_ff={f}]")
    if kind.uses_predictor and self.predictor is None:
      raise ValueError(f"mask_kind={self.mask_kind!r} needs a predictor backbone config")
    if self.eps <= 0:
      raise ValueError(f"eps={self.eps} must be > 0")

  def to_dict(self) -> dict[str, Any]:
    """JSON-serialisable nested dict (checkpoint metadata); `from_dict` inverts it."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any], source: str = "IFP config") -> "IFPConfig":
    """Inverse of `to_dict`; dicts written before a field existed get its default."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"{source}: unknown IFPConfig fields {unknown}")
    # Fields every version wrote: a dict without them is damaged, not old (no silent default k).
    missing = [n for n in ("llm", "k", "mask_kind") if n not in d]
    if missing:
      raise ValueError(f"{source}: IFPConfig fields {missing} are missing")
    kw = dict(d)
    kw["llm"] = LlamaConfig.from_dict(d["llm"], f"{source}: llm")
    if kw.get("predictor") is not None:
      kw["predictor"] = LlamaConfig.from_dict(d["predictor"], f"{source}: predictor")
    if "head" in kw:
      kw["head"] = PredictorHeadConfig(**d["head"])
    return cls(**kw)

  @property
  def kind(self) -> MaskKind:
    return MASK_KIND_TABLE[self.mask_kind]

  @property
  def uses_predictor(self) -> bool:
    return self.kind.uses_predictor

  @property
  def has_masks(self) -> bool:
    return self.kind.has_masks

  @property
  def hard_concrete(self) -> bool:
    return self.kind.hard_concrete

  @property
  def target_sparsity(self) -> float:
    return 1.0 - self.k / self.llm.intermediate_size


@flax.struct.dataclass
class MaskOutput:
  masks: Optional[Array]  # [B, C, L, F] (None for mask_kind none)
  scores: Optional[Array]  # predictor scores / log-alphas [B, C, L, F]
  expected_sparsity: Optional[Array]  # scalar, HardConcrete kinds only


@flax.struct.dataclass
class IFPOutput:
  logits: Array  # [B, T, vocab] f32
  masks: MaskOutput
  cache: Optional[KVCache] = None


class IFPModel(nn.Module):
  cfg: IFPConfig

  def setup(self):
    cfg = self.cfg
    self.llm = Decoder(cfg.llm)
    if cfg.uses_predictor:
      self.predictor = SparsityPredictor(
        cfg.predictor, cfg.head, cfg.llm.num_hidden_layers, cfg.llm.intermediate_size
      )
    if cfg.has_masks and not cfg.uses_predictor:  # static: one learned log-alpha table
      shape = (cfg.llm.num_hidden_layers, cfg.llm.intermediate_size)
      init = lambda rng, s: jnp.full(s, cfg.hc_init_log_alpha) + 0.01 * jax.random.normal(rng, s)  # noqa: E731
      self.static_log_alpha = self.param(
        "static_log_alpha", nn.with_logical_partitioning(init, ("layers", "mlp")), shape
      )

  def scores(self, predictor_ids: Array, predictor_lengths: Array) -> Array:
    """[B, C, P] prompt chunks -> scores [B, C, L, F] (predictor kinds only)."""
    b, c, p = predictor_ids.shape
    s = self.predictor(predictor_ids.reshape(b * c, p), predictor_lengths.reshape(b * c))
    return s.reshape(b, c, *s.shape[1:])

  def masks(
    self,
    predictor_ids: Array | None = None,
    predictor_lengths: Array | None = None,
    *,
    batch: int | None = None,
    deterministic: bool = True,
  ) -> MaskOutput:
    """Per-layer FFN masks. Training HardConcrete draws noise from the 'mask' rng stream."""
    cfg = self.cfg
    k = cfg.k
    if not cfg.has_masks:
      return MaskOutput(None, None, None)
    if not cfg.uses_predictor:  # static: one learned log-alpha for all inputs
      log_alpha = jnp.broadcast_to(
        self.static_log_alpha, (batch or 1, 1) + self.static_log_alpha.shape
      )
    else:
      if predictor_ids is None or predictor_lengths is None:
        raise ValueError(f"mask_kind={cfg.mask_kind!r} needs predictor_ids and predictor_lengths")
      if predictor_ids.ndim == 2:  # one prompt per sequence
        predictor_ids, predictor_lengths = predictor_ids[:, None], predictor_lengths[:, None]
      log_alpha = self.scores(predictor_ids, predictor_lengths)
    expected = None
    if not cfg.hard_concrete:  # soft_topk
      masks = (
        masking.hard_topk(log_alpha, k)
        if deterministic
        else masking.soft_topk_mask(log_alpha, k, cfg.eps)
      )
    else:
      if cfg.uses_predictor:  # predictor scores are offsets from the initial log-alpha
        log_alpha = log_alpha + cfg.hc_init_log_alpha
      expected = jnp.mean(masking.expected_sparsity(log_alpha))
      masks = (
        masking.hard_concrete_eval_mask(log_alpha, k)
        if deterministic
        else masking.hard_concrete_sample(self.make_rng("mask"), log_alpha)
      )
    masks = constrain(masks, ("act_batch", None, None, "act_mlp"))
    return MaskOutput(masks, log_alpha, expected)

  def __call__(
    self,
    inputs: ModelInputs | Batch,
    *,
    deterministic: bool = True,
    ffn_masks: Array | None = None,
    **decoder_kw,
  ) -> IFPOutput:
    """inputs by name (data/batch.py): input_ids [B, T]; predictor_ids [B, C, P] or [B, P],
    predictor_lengths [B, C] or [B]; mask_index [B, T] in [0, C); segment_ids [B, T] or None
    (packed rows). A `Batch` works as is.

    `ffn_masks` [B, (C,) L, F] overrides the predicted masks (e.g. cached per-task masks).
    """
    input_ids = inputs.input_ids
    if ffn_masks is None:
      mask_out = self.masks(
        inputs.predictor_ids,
        inputs.predictor_lengths,
        batch=input_ids.shape[0],
        deterministic=deterministic,
      )
    else:
      mask_out = MaskOutput(ffn_masks, None, None)
    segments = getattr(inputs, "segment_ids", None)
    if segments is not None:
      decoder_kw = {"segment_ids": segments, **decoder_kw}
    out = self.llm(input_ids, ffn_masks=mask_out.masks, mask_index=inputs.mask_index, **decoder_kw)
    return IFPOutput(logits=out.logits, masks=mask_out, cache=out.cache)


def init_params(cfg: IFPConfig, rng: Array, seq_len: int = 8, prompt_len: int = 8) -> Any:
  """Boxed (logically partitioned) params; use `jax.eval_shape` on it for abstract trees."""
  inputs = ModelInputs(
    input_ids=jnp.zeros((1, seq_len), jnp.int32),
    predictor_ids=jnp.zeros((1, 1, prompt_len), jnp.int32),
    predictor_lengths=jnp.ones((1, 1), jnp.int32),
  )
  return IFPModel(cfg).init({"params": rng, "mask": rng}, inputs, deterministic=True)["params"]
