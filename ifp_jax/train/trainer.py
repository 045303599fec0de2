"""The training job: CPT then SFT in one run, sharded, checkpointed, observable.

Everything stateful lives here (files, signals, iterators); the math is in train_step.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import signal
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from ifp_jax.data.pipeline import build_iterator
from ifp_jax.data.tokenization import Tokenizer, load_tokenizer
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.ifp_model import IFPConfig
from ifp_jax.model.predictor import backbone_from_llm
from ifp_jax.train import distributed, optim, sharding, validate
from ifp_jax.train.checkpointing import Checkpointer
from ifp_jax.train.config import build_ifp_config, llama_from_fields
from ifp_jax.train.metrics import MetricsLogger, plot_loss_curves
from ifp_jax.train.state import BATCH_NDIMS, abstract_state, compile_steps, init_state
from ifp_jax.train.step import StepConfig

log = logging.getLogger(__name__)

STAGES = ("cpt", "sft")


@dataclasses.dataclass
class Stage:
  name: str
  start: int  # first global step
  steps: int

  @property
  def end(self) -> int:
    return self.start + self.steps


def stages_of(config) -> list[Stage]:
  out, start = [], 0
  for name in STAGES:
    out.append(Stage(name, start, int(config[name].steps)))
    start += int(config[name].steps)
  return out


def load_pretrained(spec: str) -> tuple[LlamaConfig, dict]:
  """A model spec (ifp_jax.io.models: smollm2, gguf:, hf:, WORKDIR) -> (config, numpy params)."""
  from ifp_jax.io.models import resolve_model

  model = resolve_model(spec, flag="model.init_from")
  return model.cfg, model.params


def resolve_models(config, tokenizer: Tokenizer) -> tuple[IFPConfig, dict | None]:
  """(IFPConfig, pretrained numpy weights or None) from the config and the tokenizer."""
  m = config.model
  pretrained = None
  if m.init_from:
    llm, llm_params = load_pretrained(m.init_from)
    pretrained = {"llm": llm_params}
    if tokenizer.vocab_size > llm.vocab_size:
      raise ValueError(
        f"tokenizer {config.data.tokenizer!r} has {tokenizer.vocab_size} ids but "
        f"the checkpoint's vocab_size is {llm.vocab_size}"
      )
  else:
    vocab = m.llm.vocab_size or _round_up(tokenizer.vocab_size, 128)
    if vocab < tokenizer.vocab_size:
      raise ValueError(f"model.llm.vocab_size={vocab} < tokenizer vocab {tokenizer.vocab_size}")
    llm = llama_from_fields(m.llm, vocab_size=vocab)
  if m.predictor_init_layers > 0:
    predictor = llm.replace(num_hidden_layers=int(m.predictor_init_layers))
    if pretrained is not None:
      pretrained["predictor"] = {
        "backbone": backbone_from_llm(pretrained["llm"], m.predictor_init_layers)
      }
  else:
    predictor = llama_from_fields(m.predictor, vocab_size=llm.vocab_size)
  ifp = build_ifp_config(config, llm, predictor)
  if not ifp.uses_predictor and pretrained is not None:
    pretrained.pop("predictor", None)
  return ifp, pretrained


def _round_up(x: int, m: int) -> int:
  return (x + m - 1) // m * m


def _host_position(data_state: dict) -> dict:
  """This host's iterator state from a checkpoint's data item (older ones hold one position)."""
  if "iterators" not in data_state:
    return data_state["iterator"]
  positions = data_state["iterators"]
  if len(positions) != jax.process_count():
    raise ValueError(
      f"the checkpoint holds data positions of {len(positions)} processes, this "
      f"run has {jax.process_count()}: resuming with another process count would "
      f"repeat or skip data; restore params only (checkpointing.restore_params)"
    )
  return positions[jax.process_index()]


class Trainer:
  def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path, devices=None):
    """`devices`: the mesh's devices (default all); tests pass subsets to compare meshes."""
    self.config = config
    self.workdir = pathlib.Path(workdir).absolute()
    self.is_main = jax.process_index() == 0
    if self.is_main:
      self.workdir.mkdir(parents=True, exist_ok=True)
      (self.workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    self.tokenizer = load_tokenizer(config.data.tokenizer)
    self.mesh = sharding.make_mesh(tuple(config.mesh), devices)
    ifp, self.pretrained = resolve_models(config, self.tokenizer)
    ifp = dataclasses.replace(
      ifp,
      llm=sharding.cpu_safe_unroll(ifp.llm, self.mesh),
      predictor=ifp.predictor and sharding.cpu_safe_unroll(ifp.predictor, self.mesh),
    )
    self.ifp = ifp
    validate.validate(config, ifp, self.mesh)  # [validate hook] indivisible shapes fail here
    self.stages = stages_of(config)
    self.total_steps = self.stages[-1].end
    t = config.train
    if t.batch_size % jax.process_count():
      raise ValueError(
        f"train.batch_size={t.batch_size} is not divisible by {jax.process_count()} processes"
      )
    self.host_batch = t.batch_size // jax.process_count()
    self.lr_fns = {
      "llm": optim.stage_schedule(
        [(s.steps, config[s.name].llm_lr, config[s.name].warmup_steps) for s in self.stages]
      ),
      "predictor": optim.stage_schedule(
        [(s.steps, config[s.name].predictor_lr, config[s.name].warmup_steps) for s in self.stages]
      ),
    }
    frozen = [x for x in t.freeze.split(",") if x]
    self.tx = optim.make_optimizer(
      llm_schedule=self.lr_fns["llm"],
      predictor_schedule=self.lr_fns["predictor"],
      lagrange_lr=t.lagrange_lr,
      weight_decay=t.weight_decay,
      grad_clip=t.grad_clip,
      b2=t.adam_b2,
      frozen=frozen,
    )
    self.step_cfg = StepConfig(
      ifp, target_warmup_steps=int(t.target_warmup_frac * self.total_steps), seed=config.seed
    )
    self.ckpt = Checkpointer(
      self.workdir / "checkpoints", max_to_keep=t.keep_checkpoints, async_save=t.async_checkpoint
    )
    self._stop_requested = False

  # --- state ------------------------------------------------------------------------------
  def _scope(self):
    return _Scope(self.mesh)

  def init_or_restore(self):
    with self._scope():
      abstract, shardings = abstract_state(self.ifp, self.tx, self.mesh)
      latest = self.ckpt.latest_step()
      if latest is not None:
        state, meta, data_state = self.ckpt.restore(abstract)
        log.info("resumed from step %d (%s)", latest, self.ckpt.directory)
        return state, shardings, data_state
      state, shardings = init_state(
        self.ifp, self.tx, self.mesh, jax.random.key(self.config.seed), self.pretrained
      )
      return state, shardings, None

  def _iterator(self, stage: Stage, split: str | None = None, num_epochs=None):
    return build_iterator(
      self.config.data,
      self.tokenizer,
      kind=stage.name,
      seq_len=self.config.train.seq_len,
      batch_size=self.host_batch,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      seed=self.config.seed,
      split=split,
      num_epochs=num_epochs,
    )

  def _meta(self, step: int, stage: Stage) -> dict:
    return {
      "step": step,
      "stage": stage.name,
      "total_steps": self.total_steps,
      "config": json.loads(self.config.to_json_best_effort()),
      "ifp": self.ifp.to_dict(),
      "tokenizer": self.config.data.tokenizer,
    }

  def _save(self, step, state, stage, it, force=False):
    # Each host reads its own slice, so each host's position is saved (index = process index).
    data_state = {"stage": stage.name, "iterators": distributed.allgather_json(it.get_state())}
    self.ckpt.save(step, state, self._meta(step, stage), data_state, force=force)

  # --- loop -------------------------------------------------------------------------------
  def run(self, max_steps: int | None = None) -> dict[str, Any]:
    """Trains to the end (or `max_steps` more steps); returns a summary dict."""
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      return self._run(max_steps)
    finally:
      signal.signal(signal.SIGTERM, previous)
      self.ckpt.wait()

  def _on_sigterm(self, signum, frame):
    log.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self._stop_requested = True

  def _run(self, max_steps):
    t = self.config.train
    state, shardings, data_state = self.init_or_restore()
    with self._scope():
      train, evaluate = compile_steps(
        self.step_cfg, self.tx, self.lr_fns, shardings, self.mesh, BATCH_NDIMS
      )
    step = int(jax.device_get(state.step))
    budget_end = self.total_steps if max_steps is None else min(self.total_steps, step + max_steps)
    logger = MetricsLogger(self.workdir, enabled=self.is_main)
    summary: dict[str, Any] = {"workdir": str(self.workdir), "stages": {}}
    for stage in self.stages:
      if step >= stage.end or stage.steps == 0 or step >= budget_end:
        continue
      it = self._iterator(stage)
      if data_state is not None and data_state.get("stage") == stage.name:
        it.set_state(_host_position(data_state))
      data_state = None
      logger.start_stage(stage.name, stage.end - step)
      t0, tokens_since = time.perf_counter(), 0
      while step < min(stage.end, budget_end):
        batch = next(it)
        with self._scope():
          state, metrics = train(state, sharding.host_to_global(batch, self.mesh))
        step += 1
        tokens_since += batch["input_ids"].size * jax.process_count()
        if step % t.log_every == 0 or step == stage.end:
          m = {k: float(v) for k, v in jax.device_get(metrics).items()}
          dt = time.perf_counter() - t0
          m.update(step=step, stage=stage.name, tokens_per_sec=tokens_since / max(dt, 1e-9))
          logger.log(m, remaining=min(stage.end, budget_end) - step)
          t0, tokens_since = time.perf_counter(), 0
          if not math.isfinite(m["loss"]):
            self._save(step, state, stage, it, force=True)
            raise FloatingPointError(f"loss is {m['loss']} at step {step}; checkpoint saved")
        # Also at the end of a --max_steps budget, so a bounded run can be continued.
        if step % t.checkpoint_every == 0 or step in (stage.end, budget_end):
          self._save(step, state, stage, it)
        if self._stop_requested:
          self._save(step, state, stage, it, force=True)
          self.ckpt.wait()
          logger.close()
          log.warning("stopped by SIGTERM at step %d; checkpoint written", step)
          sys.exit(143)
      summary["stages"][stage.name] = logger.stage_summary(stage.name)
      if t.eval_batches and step == stage.end:
        summary["stages"][stage.name]["eval_loss_hard_masks"] = self._eval(state, stage, evaluate)
    self.ckpt.wait()
    logger.close()
    summary.update(
      step=step, checkpoint=str(self.ckpt.directory), latest_checkpoint_step=self.ckpt.latest_step()
    )
    if self.is_main:
      plot_loss_curves(self.workdir / "metrics.jsonl", self.workdir / "loss_curve.png")
      (self.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

  def _eval(self, state, stage: Stage, evaluate) -> float | None:
    """Held-out loss with hard top-k masks (what pruned inference computes)."""
    try:
      it = self._iterator(stage, split="eval", num_epochs=1)
    except ValueError as e:  # e.g. a source without an eval split
      log.warning("no held-out eval for stage %s: %s", stage.name, e)
      return None
    total, weight = 0.0, 0.0
    for _, batch in zip(range(self.config.train.eval_batches), it):
      with self._scope():
        out = jax.device_get(evaluate(state.params, sharding.host_to_global(batch, self.mesh)))
      total += float(out["ce"]) * float(out["tokens"])
      weight += float(out["tokens"])
    return total / weight if weight else None


class _Scope:
  """Mesh + logical axis rules for tracing and running sharded code."""

  def __init__(self, mesh):
    self.mesh = mesh

  def __enter__(self):
    self._mesh_ctx = jax.set_mesh(self.mesh)
    self._mesh_ctx.__enter__()
    self._rules_ctx = nn.logical_axis_rules(sharding.LOGICAL_RULES)
    self._rules_ctx.__enter__()

  def __exit__(self, *exc):
    self._rules_ctx.__exit__(*exc)
    self._mesh_ctx.__exit__(*exc)


def kept_fraction(ifp: IFPConfig) -> float:
  return 1.0 if ifp.mask_kind == "none" else ifp.k / ifp.llm.intermediate_size
