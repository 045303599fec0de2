"""Train-step throughput of ifp_jax next to the same model in PyTorch, and MFU.

  python benchmarks/train_throughput.py [--shape=smollm2|tiny] [--batch=N --seq=T]
      [--rounds=R --steps=S] [--quick] [--out=benchmarks/results/NAME.md]

Four variants, built from one config (configs/smollm2_135m.py or configs/tiny.py) on one
device, all resident in one process and measured alternately (round r runs every variant for
--steps steps; the order reverses each round so slow drifts of a shared machine cancel):
  jax_ifp      our jitted train step (state_init.compile_steps: predictor -> soft top-k masks
               -> masked LLM -> weighted CE -> Optax AdamW with per-group clipping), soft_topk;
  jax_dense    the same step with mask_kind 'none' (no predictor, no masks);
  torch_ifp    transformers LlamaForCausalLM + a torch predictor (LlamaModel backbone + the same
               2-layer head) + exact soft top-k (sort + logcumsumexp, implicit-gradient backward
               as ifp_jax.model.masking), masks applied by a forward pre-hook on every layer's
               mlp.down_proj input (= silu(gate) * up), torch.optim.AdamW per group with the same
               clipping; weights are OUR initial params exported through hf_io, so the masks come
               from the same predictor scores (the first-step losses are printed side by side);
  torch_dense  the same LlamaForCausalLM without predictor and hooks.
  jax_ifp_frozen      jax_ifp with train.freeze='llm' (regime (a) of repro_smollm2): the LLM's
               gradient is not computed (stop_gradient in the step);
  jax_ifp_frozen_opt  the same freeze done by the optimizer only (gradient computed, then
               zeroed: what train.freeze did before); same losses, it measures the saving.
  jax_ifp_autodiff_ffn, jax_dense_autodiff_ffn  jax_ifp / jax_dense with the FFN's backward
               left to autodiff (model.swiglu.swiglu_reference) instead of the hand-written
               VJP of model/swiglu.py: same forward, it measures what the custom VJP saves.
Batches use the CPT layout of the data pipeline (packing.route_cpt_row, num_chunks from the
config: the predictor reads chunk 1, whose mask serves the whole row). Compile / first-step
time is reported separately. Ratios are medians of per-round ratios. MFU = model FLOPs
(analytic: 6 x matmul params x tokens + attention, predictor included for the IFP variants) /
time / the matmul peak measured in this run (max of a jax and a torch N^3 matmul in the
compute dtype).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import time
from unittest import mock

from absl import app, flags, logging

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ifp_jax.train import allocator  # noqa: E402

allocator.reexec_with_mimalloc()  # as launch.train does (IFP_ALLOCATOR=system: glibc malloc)
import bench_json  # noqa: E402
import flax.linen as nn  # noqa: E402
import hf_peer  # noqa: E402  (before torch: it sets libgomp's wait policy)
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from ifp_jax.data import packing  # noqa: E402
from ifp_jax.data.batch import FIELD_NAMES  # noqa: E402
from ifp_jax.data.tokenization import load_tokenizer  # noqa: E402
from ifp_jax.io import hf as hf_io  # noqa: E402
from ifp_jax.model import layers as model_layers  # noqa: E402
from ifp_jax.model.config import LlamaConfig  # noqa: E402
from ifp_jax.model.ifp_model import IFPConfig  # noqa: E402
from ifp_jax.model.swiglu import swiglu_reference  # noqa: E402
from ifp_jax.train import optim, sharding  # noqa: E402
from ifp_jax.train.state import BATCH_NDIMS, compile_steps, init_state  # noqa: E402
from ifp_jax.train.step import StepConfig  # noqa: E402
from ifp_jax.train.trainer import resolve_models  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
  "shape",
  "smollm2",
  ["smollm2", "tiny"],
  "configs/smollm2_135m.py (real SmolLM2 weights from the GGUF) or configs/tiny.py (random init).",
)
flags.DEFINE_integer("batch", None, "Sequences per step (default: 1 smollm2, 16 tiny).")
flags.DEFINE_integer("seq", None, "Tokens per sequence (default: 256 smollm2, 128 tiny).")
flags.DEFINE_integer("rounds", None, "Alternating rounds (default 5; 2 with --quick).")
flags.DEFINE_integer(
  "steps", None, "Timed steps per variant per round (default: 1 smollm2, 10 tiny)."
)
flags.DEFINE_list(
  "variants",
  ["jax_ifp", "jax_dense", "torch_ifp", "torch_dense"],
  "Subset of jax_ifp, jax_dense, torch_ifp, torch_dense, jax_ifp_frozen, jax_ifp_frozen_opt, "
  "jax_ifp_autodiff_ffn, jax_dense_autodiff_ffn.",
)
flags.DEFINE_integer(
  "matmul_n", 2048, "Size of the N^3 matmul (compute dtype) that measures the peak."
)
flags.DEFINE_enum(
  "dtype",
  "float32",
  ["float32", "bfloat16"],
  "Compute dtype (jax: model.dtype; torch: autocast). f32 master weights either way.",
)
flags.DEFINE_bool(
  "torch_fused_adamw", False, "torch.optim.AdamW(fused=True) instead of the default implementation."
)
flags.DEFINE_bool("quick", False, "Smoke run: tiny shape, 2 rounds, 2 steps, 512^3 matmul.")
flags.DEFINE_string(
  "out", None, "Also write the table (with command, machine, date) to this markdown file."
)
flags.DEFINE_string("json", None, "Also write the figures as JSON (keys: benchmarks/README.md).")

VARIANTS = (
  "jax_ifp",
  "jax_dense",
  "torch_ifp",
  "torch_dense",
  "jax_ifp_frozen",
  "jax_ifp_frozen_opt",
  "jax_ifp_autodiff_ffn",
  "jax_dense_autodiff_ffn",
)
FROZEN = {"jax_ifp_frozen": ("llm", True), "jax_ifp_frozen_opt": ("llm", False)}


# --------------------------------------------------------------------------- setup


def load_config(shape: str, dtype: str):
  path = ROOT / "configs" / ("smollm2_135m.py" if shape == "smollm2" else "tiny.py")
  spec = importlib.util.spec_from_file_location(f"bench_cfg_{shape}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.dtype = dtype
  c.model.remat = "none"
  return c, path


def cpt_batch(vocab: int, batch: int, seq: int, num_chunks: int, seed: int = 0) -> dict:
  """Random token rows routed exactly as the CPT pipeline routes them."""
  rows = np.random.default_rng(seed).integers(3, vocab, (batch, seq + 1))
  examples = [packing.route_cpt_row(r, num_chunks) for r in rows]
  return {k: np.stack([e[k] for e in examples]) for k in FIELD_NAMES}


class JaxVariant:
  """Our state + the jitted, donating train step of the trainer, on a 1-device mesh."""

  def __init__(
    self, ifp: IFPConfig, config, pretrained, batch: dict, frozen=None, autodiff_ffn=False
  ):
    """`frozen`: (group, stop_gradient) - train.freeze=group, with the gradient skipped (True)
    or computed and zeroed by the optimizer (False). `autodiff_ffn`: trace the step with the
    FFN's autodiff backward instead of model/swiglu.py's custom VJP."""
    self.autodiff_ffn = autodiff_ffn
    self.mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    cpt = config.cpt  # constant CPT learning rates (the values do not change the speed)
    self.lr_fns = {
      "llm": optim.stage_schedule([(cpt.steps, cpt.llm_lr, 0)]),
      "predictor": optim.stage_schedule([(cpt.steps, cpt.predictor_lr, 0)]),
    }
    t = config.train
    self.tx = optim.make_optimizer(
      llm_schedule=self.lr_fns["llm"],
      predictor_schedule=self.lr_fns["predictor"],
      lagrange_lr=t.lagrange_lr,
      weight_decay=t.weight_decay,
      grad_clip=t.grad_clip,
      b2=t.adam_b2,
      frozen=[frozen[0]] if frozen else [],
    )
    skip = (frozen[0],) if frozen and frozen[1] else ()
    if pretrained and not ifp.uses_predictor:
      pretrained = {k: v for k, v in pretrained.items() if k != "predictor"}
    with self.scope():
      self.state, shardings = init_state(
        ifp, self.tx, self.mesh, jax.random.key(config.seed), pretrained
      )
      self.step_fn, _ = compile_steps(
        StepConfig(ifp, seed=config.seed, frozen=skip),
        self.tx,
        self.lr_fns,
        shardings,
        self.mesh,
        BATCH_NDIMS,
      )
    self.batch = {
      k: jax.device_put(v, sharding.batch_sharding(self.mesh, v.ndim)) for k, v in batch.items()
    }

  def scope(self):
    class _Scope:
      def __enter__(s):
        s.ctxs = [jax.set_mesh(self.mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES)]
        if self.autodiff_ffn:  # the jit traces on the first step, inside this scope
          s.ctxs.append(mock.patch.object(model_layers, "swiglu", swiglu_reference))
        for c in s.ctxs:
          c.__enter__()

      def __exit__(s, *exc):
        for c in reversed(s.ctxs):
          c.__exit__(*exc)

    return _Scope()

  def model_params_numpy(self) -> dict:
    return jax.device_get(self.state.params["model"])

  def step(self) -> float:
    with self.scope():
      self.state, metrics = self.step_fn(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return float(metrics["loss"])


# --------------------------------------------------------------------------- torch peer


class _SoftTopK(torch.autograd.Function):
  """Exact entropic top-k (same closed form and implicit VJP as ifp_jax.model.masking.soft_topk)."""

  @staticmethod
  def forward(ctx, s, k: int, eps: float):
    s = s - s.amax(-1, keepdim=True)
    s_desc = torch.sort(s, dim=-1, descending=True).values
    suffix = torch.logcumsumexp((s_desc / eps).flip(-1), dim=-1).flip(-1)[..., :k]
    free = k - torch.arange(k, dtype=s.dtype, device=s.device)
    tau = (eps * (suffix - torch.log(free))).amin(-1, keepdim=True)
    lam = torch.clamp(torch.exp((s - tau) / eps), max=1.0)
    ctx.save_for_backward(lam)
    ctx.eps = eps
    return lam

  @staticmethod
  def backward(ctx, g):
    (lam,) = ctx.saved_tensors
    lam_u = torch.where(lam < 1.0, lam, torch.zeros_like(lam))
    denom = lam_u.sum(-1, keepdim=True)
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return (lam_u / ctx.eps) * (g - (g * lam_u).sum(-1, keepdim=True) / safe), None, None


def torch_soft_topk_mask(scores: torch.Tensor, k: int, eps: float) -> torch.Tensor:
  lam = _SoftTopK.apply(scores, k, eps)
  keep = torch.zeros_like(scores).scatter_(-1, torch.topk(scores.detach(), k).indices, 1.0)
  return lam * keep


class TorchPredictor(torch.nn.Module):
  """LlamaModel backbone -> hidden at the last non-pad token -> Dense -> GELU -> Dense."""

  def __init__(self, ifp: IFPConfig, params: dict):
    super().__init__()
    self.backbone = transformers.LlamaModel(hf_peer.hf_config(ifp.predictor))
    hf_peer.load_weights(
      self.backbone,
      {
        n.removeprefix("model."): w
        for n, w in hf_io.params_to_hf(ifp.predictor, params["backbone"])
      },
      "predictor",
    )
    if ifp.head.activation != "gelu":
      raise ValueError(f"torch peer implements head activation gelu, not {ifp.head.activation}")
    hin, hout = params["head_in"], params["head_out"]
    self.head_in = torch.nn.Linear(*hin["kernel"].shape)
    self.head_out = torch.nn.Linear(*hout["kernel"].shape)
    for lin, p in ((self.head_in, hin), (self.head_out, hout)):
      lin.weight.data = torch.from_numpy(np.array(p["kernel"]).T.copy())
      lin.bias.data = torch.from_numpy(np.array(p["bias"]))
    self.shape = (ifp.llm.num_hidden_layers, ifp.llm.intermediate_size)

  def forward(self, ids, lengths):
    hidden = self.backbone(input_ids=ids).last_hidden_state
    feat = hidden[torch.arange(ids.shape[0]), (lengths - 1).clamp(0, ids.shape[1] - 1)]
    h = torch.nn.functional.gelu(self.head_in(feat.float()), approximate="tanh")  # = flax gelu
    return self.head_out(h).reshape(ids.shape[0], *self.shape)


class TorchVariant:
  def __init__(self, ifp: IFPConfig, config, params: dict, batch: dict, device: str):
    self.ifp, self.device = ifp, device
    self.llm = hf_peer.causal_lm(ifp.llm, params["llm"])
    self.llm.to(device).train()
    groups = [list(self.llm.parameters())]
    self.predictor = None
    if ifp.uses_predictor:
      self.predictor = TorchPredictor(ifp, params["predictor"]).to(device).train()
      groups.append(list(self.predictor.parameters()))
      self._masks = [None] * ifp.llm.num_hidden_layers
      for i, layer in enumerate(self.llm.model.layers):  # h = silu(gate) * up -> h * mask
        layer.mlp.down_proj.register_forward_pre_hook(
          lambda _, args, i=i: (args[0] * self._masks[i],)
        )
    t, cpt = config.train, config.cpt
    self.groups = groups
    kw = {"fused": True} if FLAGS.torch_fused_adamw else {}
    self.opt = torch.optim.AdamW(
      [{"params": g, "lr": lr} for g, lr in zip(groups, (cpt.llm_lr, cpt.predictor_lr))],
      lr=cpt.llm_lr,
      betas=(0.9, t.adam_b2),
      eps=1e-8,
      weight_decay=t.weight_decay,
      **kw,
    )
    self.clip = t.grad_clip
    self.batch = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in batch.items()}
    self.autocast = torch.autocast(
      device.split(":")[0], dtype=torch.bfloat16, enabled=FLAGS.dtype == "bfloat16"
    )

  def _set_masks(self, b):
    ids, lengths = b["predictor_ids"], b["predictor_lengths"]
    n, c, p = ids.shape
    scores = self.predictor(ids.reshape(n * c, p), lengths.reshape(n * c))
    scores = scores.reshape(n, c, *self.predictor.shape)
    masks = torch_soft_topk_mask(scores.float(), self.ifp.k, self.ifp.eps)  # [B, C, L, F]
    for i in range(len(self._masks)):
      m = masks[:, :, i]  # [B, C, F] -> per token [B, T, F]
      self._masks[i] = (
        m if c == 1 else torch.gather(m, 1, b["mask_index"][..., None].expand(-1, -1, m.shape[-1]))
      )

  def step(self) -> float:
    b = self.batch
    with self.autocast:
      if self.predictor is not None:
        self._set_masks(b)
      logits = self.llm(input_ids=b["input_ids"]).logits.float()
    nll = torch.nn.functional.cross_entropy(
      logits.flatten(0, 1), b["targets"].flatten().long(), reduction="none"
    )
    w = b["loss_weights"].flatten()
    loss = (nll * w).sum() / w.sum().clamp(min=1.0)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip > 0:
      for g in self.groups:
        torch.nn.utils.clip_grad_norm_(g, self.clip)
    self.opt.step()
    if self.device.startswith("cuda"):
      torch.cuda.synchronize()
    return float(loss.detach())


# --------------------------------------------------------------------------- flops, peak


def llm_train_flops(cfg: LlamaConfig, tokens: int, seq: int, logits: bool = True) -> float:
  """6 x (matmul MACs per token) x tokens + attention scores/values over full seq x seq."""
  d, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
  h, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.resolved_head_dim
  macs = n * (d * (h + 2 * kv) * hd + h * hd * d + 3 * d * f) + (
    d * cfg.vocab_size if logits else 0
  )
  attn = n * 2 * seq * h * hd
  return 6.0 * (macs + attn) * tokens


def model_flops(ifp: IFPConfig, batch: dict) -> float:
  b, t = batch["input_ids"].shape
  flops = llm_train_flops(ifp.llm, b * t, t)
  if ifp.uses_predictor:
    n, c, p = batch["predictor_ids"].shape
    flops += llm_train_flops(ifp.predictor, n * c * p, p, logits=False)
    flops += (
      6.0
      * n
      * c
      * (
        ifp.predictor.hidden_size * ifp.head.hidden
        + ifp.head.hidden * ifp.llm.num_hidden_layers * ifp.llm.intermediate_size
      )
    )
  return flops


def matmul_peak(n: int, device: str, dtype: str, reps: int = 5) -> dict[str, float]:
  """GFLOP/s of an n^3 matmul in the compute dtype in jax and torch, alternately (median)."""
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  ja = jax.device_put(a).astype(dtype)
  jf = jax.jit(lambda x: x @ x)
  ta = torch.from_numpy(a).to(device).to(getattr(torch, dtype))
  jax.block_until_ready(jf(ja))
  _ = ta @ ta
  times = {"jax": [], "torch": []}
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(jf(ja))
    times["jax"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    _ = ta @ ta
    if device.startswith("cuda"):
      torch.cuda.synchronize()
    times["torch"].append(time.perf_counter() - t0)
  return {k: 2.0 * n**3 / statistics.median(v) / 1e9 for k, v in times.items()}


# --------------------------------------------------------------------------- report


def machine() -> str:
  cpu = (
    next(
      (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
      platform.processor(),
    )
    if os.path.exists("/proc/cpuinfo")
    else platform.processor()
  )
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  dev = jax.devices()[0]
  return (
    f"{os.cpu_count()} CPUs ({cpu}), load avg {load}; jax {jax.__version__} on "
    f"{dev.platform} ({dev.device_kind}), torch {torch.__version__} "
    f"({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
    f"{os.environ.get('OMP_WAIT_POLICY')}), transformers {transformers.__version__}; "
    f"allocator {'mimalloc' if allocator.active() else 'system'} (both frameworks)"
  )


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # optax logs every constant schedule at INFO
  quick = FLAGS.quick
  shape = "tiny" if quick and "--shape" not in " ".join(sys.argv) else FLAGS.shape
  small = shape == "tiny"
  batch_size = FLAGS.batch or (16 if small else 1)
  seq = FLAGS.seq or (128 if small else 256)
  rounds = FLAGS.rounds or (2 if quick else 5)
  steps = FLAGS.steps or (2 if quick else (10 if small else 1))
  variants = [v for v in VARIANTS if v in FLAGS.variants]
  unknown = set(FLAGS.variants) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}; expected {VARIANTS}")
  torch.set_num_threads(os.cpu_count())
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if jax.default_backend() != "cpu" and device == "cpu":
    print(
      f"note: jax runs on {jax.default_backend()} but this torch has no CUDA: the torch "
      "variants are skipped (ratios would compare different hardware)"
    )
    variants = [v for v in variants if not v.startswith("torch")]
  t_start = time.perf_counter()
  header = machine()
  print(header, flush=True)

  config, cfg_path = load_config(shape, FLAGS.dtype)
  tok = load_tokenizer(config.data.tokenizer)
  ifp, pretrained = resolve_models(config, tok)
  dense = dataclasses.replace(ifp, mask_kind="none", predictor=None)
  batch = cpt_batch(ifp.llm.vocab_size, batch_size, seq, config.data.num_chunks)
  tokens = batch_size * seq
  print(
    f"shape {shape} ({cfg_path.name}): {ifp.llm.num_hidden_layers} layers x "
    f"{ifp.llm.hidden_size}, d_ff {ifp.llm.intermediate_size}, k {ifp.k}, vocab "
    f"{ifp.llm.vocab_size}; predictor {ifp.predictor.num_hidden_layers} layers x "
    f"{ifp.predictor.hidden_size}, reads {batch['predictor_ids'].shape[1:]} tokens per row; "
    f"batch {batch_size} x {seq} = {tokens} tokens/step, {FLAGS.dtype}",
    flush=True,
  )

  runners, first, t_init = {}, {}, {}
  params_np = {}
  for name in variants:  # jax first: the torch peers copy the jax initial params
    t0 = time.perf_counter()
    cfg = ifp if "_ifp" in name else dense
    if name.startswith("jax"):
      runners[name] = JaxVariant(
        cfg, config, pretrained, batch, FROZEN.get(name), name.endswith("_autodiff_ffn")
      )
      params_np[name] = runners[name].model_params_numpy()
    else:
      src = params_np.get("jax_" + name.split("_")[1])
      if src is None:  # no jax twin selected: build one just for its initial params
        src = JaxVariant(cfg, config, pretrained, batch).model_params_numpy()
      runners[name] = TorchVariant(cfg, config, src, batch, device)
    t_init[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    first[name] = runners[name].step()  # jax: includes compilation
    t_first = time.perf_counter() - t0
    print(
      f"  {name:<12s} init {t_init[name]:6.1f} s, first step (compile) {t_first:6.1f} s, "
      f"loss {first[name]:.5f}",
      flush=True,
    )
    t_init[name] = (t_init[name], t_first)
  del params_np
  peak = matmul_peak(256 if quick else FLAGS.matmul_n, device, FLAGS.dtype)

  times = {v: [] for v in variants}
  for r in range(rounds):
    order = variants if r % 2 == 0 else variants[::-1]
    for name in order:
      t0 = time.perf_counter()
      for _ in range(steps):
        runners[name].step()
      times[name].append((time.perf_counter() - t0) / steps)
    print(
      f"  round {r + 1}/{rounds}: "
      + ", ".join(f"{v} {times[v][-1] * 1e3:.0f} ms" for v in variants),
      flush=True,
    )
  peak_max = max(peak.values())
  # (frozen variants: the full-training FLOPs, so their MFU column overstates)
  flops = {v: model_flops(ifp if "_ifp" in v else dense, batch) for v in variants}

  def ratio(a, b):
    if a not in times or b not in times:
      return None
    return statistics.median(x / y for x, y in zip(times[b], times[a]))  # speed a / speed b

  lines = [
    "| variant | ms/step (median) | tokens/s | model TFLOP/step | MFU | init s | first step s |",
    "|---|---|---|---|---|---|---|",
  ]
  for v in variants:
    med = statistics.median(times[v])
    lines.append(
      f"| {v} | {med * 1e3:.0f} | {tokens / med:.0f} | {flops[v] / 1e12:.3f} | "
      f"{flops[v] / med / (peak_max * 1e9):.1%} | {t_init[v][0]:.1f} | "
      f"{t_init[v][1]:.1f} |"
    )
  lines.append("")
  rows = [
    ("ours / torch, IFP (tokens/s ratio)", ratio("jax_ifp", "torch_ifp"), ">= 1.3"),
    ("ours / torch, dense", ratio("jax_dense", "torch_dense"), "-"),
    (
      "IFP overhead, ours (dense / IFP speed - 1)",
      None if ratio("jax_dense", "jax_ifp") is None else ratio("jax_dense", "jax_ifp") - 1,
      "<= 0.15",
    ),
    (
      "frozen LLM: gradient skipped / computed and zeroed (speed)",
      ratio("jax_ifp_frozen", "jax_ifp_frozen_opt"),
      "> 1",
    ),
    (
      "IFP overhead, torch",
      None if ratio("torch_dense", "torch_ifp") is None else ratio("torch_dense", "torch_ifp") - 1,
      "-",
    ),
    ("custom-VJP FFN / autodiff FFN, IFP (speed)", ratio("jax_ifp", "jax_ifp_autodiff_ffn"), "> 1"),
    (
      "custom-VJP FFN / autodiff FFN, dense (speed)",
      ratio("jax_dense", "jax_dense_autodiff_ffn"),
      "> 1",
    ),
  ]
  by_label = {n: v for n, v, _ in rows}  # the JSON reads rows by label, not by position
  lines += ["| ratio (median of per-round ratios) | value | target |", "|---|---|---|"]
  lines += [f"| {n} | {v:.3f} | {t} |" for n, v, t in rows if v is not None]
  lines.append("")
  lines.append(
    f"matmul peak {FLAGS.dtype} {FLAGS.matmul_n if not quick else 256}^3: jax "
    f"{peak['jax']:.0f} GFLOP/s, torch {peak['torch']:.0f} GFLOP/s (MFU uses the max)"
  )
  lines.append(
    "per-round ms/step: "
    + "; ".join(f"{v} " + " ".join(f"{x * 1e3:.0f}" for x in times[v]) for v in variants)
  )
  if "jax_ifp" in first and "torch_ifp" in first:
    lines.append(
      f"first-step loss (same weights, same batch): jax_ifp {first['jax_ifp']:.5f}, "
      f"torch_ifp {first['torch_ifp']:.5f}"
    )
  if "jax_dense" in first and "torch_dense" in first:
    lines.append(
      f"first-step loss dense: jax {first['jax_dense']:.5f}, torch {first['torch_dense']:.5f}"
    )
  table = "\n".join(lines)
  print("\n" + table)
  print(f"total {time.perf_counter() - t_start:.0f} s")
  if FLAGS.out:
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(["python"] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    out.write_text(
      f"# Train-step throughput: {shape}\n\n"
      f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
      f"- command: `{cmd}`\n- machine: {header}\n"
      f"- {rounds} rounds x {steps} steps per variant, alternating; load "
      f"average at start and end: "
      f"{header.split('load avg ')[1].split(';')[0]} / "
      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other "
      f"jobs may run; ratios are per round)\n\n{table}\n"
    )
    print(f"wrote {out}")
  bench_json.write(
    FLAGS.json,
    "train_throughput",
    header,
    shape=shape,
    dtype=FLAGS.dtype,
    tokens_per_step=tokens,
    rounds=rounds,
    steps=steps,
    matmul_peak_gflops=dict(peak),
    variants={
      v: {
        "ms_per_step": statistics.median(times[v]) * 1e3,
        "tokens_per_s": tokens / statistics.median(times[v]),
        "model_tflop_per_step": flops[v] / 1e12,
        "mfu": flops[v] / statistics.median(times[v]) / (peak_max * 1e9),
        "init_s": t_init[v][0],
        "first_step_s": t_init[v][1],
        "first_step_loss": first[v],
      }
      for v in variants
    },
    ratios={
      "ours_over_torch_ifp": ratio("jax_ifp", "torch_ifp"),
      "ours_over_torch_dense": ratio("jax_dense", "torch_dense"),
      "frozen_skip_over_zeroed": ratio("jax_ifp_frozen", "jax_ifp_frozen_opt"),
      "ifp_overhead_ours": by_label["IFP overhead, ours (dense / IFP speed - 1)"],
      "ifp_overhead_torch": by_label["IFP overhead, torch"],
      "custom_vjp_ffn_over_autodiff_ifp": by_label["custom-VJP FFN / autodiff FFN, IFP (speed)"],
      "custom_vjp_ffn_over_autodiff_dense": by_label[
        "custom-VJP FFN / autodiff FFN, dense (speed)"
      ],
    },
  )


if __name__ == "__main__":
  app.run(main)
