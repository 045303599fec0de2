"""The training job: CPT then SFT in one run, sharded, checkpointed, observable.

Everything stateful lives here (files, signals, iterators); the math is in train_step.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import signal
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from ifp_jax.data import batch_text
from ifp_jax.data.pipeline import build_iterator
from ifp_jax.data.tokenization import Tokenizer, load_tokenizer
from ifp_jax.model.config import LlamaConfig
from ifp_jax.model.ifp_model import IFPConfig, mask_kind
from ifp_jax.train import (
  distributed,
  heldout,
  optim,
  predictor_source,
  run_files,
  sharding,
  validate,
  warm_start,
)
from ifp_jax.train.checkpointing import Checkpointer
from ifp_jax.train.config import build_ifp_config, default_config, llama_from_fields
from ifp_jax.train.metrics import MetricsLogger, plot_loss_curves
from ifp_jax.train.resume_check import check_resume
from ifp_jax.train.state import BATCH_NDIMS, abstract_state, compile_steps, init_state
from ifp_jax.train.step import StepConfig

log = logging.getLogger(__name__)

STAGES = ("cpt", "sft")


SUSPECT = "gradient norm exactly 0"  # not (yet) dead, but not saved as a good checkpoint


class DivergenceError(RuntimeError):
  """Training diverged (non-finite, over a divergence_* bound, or dead); one line naming the
  step and the last good checkpoint. Nothing diverged was saved as a checkpoint."""


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


def resolve_models(
  config, tokenizer: Tokenizer, predictor_tokenizer: Tokenizer | None = None
) -> tuple[IFPConfig, dict | None]:
  """(IFPConfig, pretrained numpy weights or None) from the config and the tokenizers
  (`predictor_tokenizer` None: the one the config names, `predictor_source`)."""
  m = config.model
  predictor_source.check(config)
  pretrained = None
  llm_params = None
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
  predictor = backbone = None
  if mask_kind(m.mask_kind).uses_predictor:
    if predictor_tokenizer is None:
      predictor_tokenizer = predictor_source.load_predictor_tokenizer(config, tokenizer)
    predictor, backbone = predictor_source.backbone(
      config, llm, llm_params, tokenizer, predictor_tokenizer
    )
  if backbone is not None:
    pretrained = {**(pretrained or {}), "predictor": {"backbone": backbone}}
  return build_ifp_config(config, llm, predictor), pretrained


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
    self.workdir = pathlib.Path(os.path.expanduser(str(workdir))).absolute()
    self.is_main = jax.process_index() == 0
    # config.json is written by run(), after validation and restore (a refused launch keeps
    # the run's record of its config).
    self.tokenizer = load_tokenizer(config.data.tokenizer)
    # What the predictor reads text with: `self.tokenizer` itself unless it has its own.
    self.predictor_tokenizer_spec = predictor_source.tokenizer_spec(config)
    self.predictor_tokenizer = predictor_source.load_predictor_tokenizer(config, self.tokenizer)
    self.mesh = sharding.make_mesh(tuple(config.mesh), devices)
    ifp, self.pretrained = resolve_models(config, self.tokenizer, self.predictor_tokenizer)
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
    if t.eval_every and t.eval_every % t.log_every:
      raise ValueError(
        f"train.eval_every={t.eval_every} must be a multiple of train.log_every={t.log_every}"
      )
    self._heldout: dict[str, list | None] = {}  # stage -> fixed held-out sample (built once)
    self.lr_fns = {
      "llm": optim.stage_schedule(
        [(s.steps, config[s.name].llm_lr, config[s.name].warmup_steps) for s in self.stages]
      ),
      "predictor": optim.stage_schedule(
        [(s.steps, config[s.name].predictor_lr, config[s.name].warmup_steps) for s in self.stages]
      ),
    }
    if any(config[s.name].get("predictor_bias_lr", 0.0) > 0 for s in self.stages):
      self.lr_fns["predictor_bias"] = optim.stage_schedule(
        [
          (
            s.steps,
            config[s.name].get("predictor_bias_lr", 0.0) or config[s.name].predictor_lr,
            config[s.name].warmup_steps,
          )
          for s in self.stages
        ]
      )
    frozen = [x for x in t.freeze.split(",") if x]
    # Every model part frozen (e.g. measuring a warm start as is): a zero gradient is then the
    # expected state, not a dead model.
    parts = {"llm"} | ({"predictor"} if self.ifp.has_masks else set())
    self._nothing_trains = parts <= set(frozen)
    self.tx = optim.make_optimizer(
      llm_schedule=self.lr_fns["llm"],
      predictor_schedule=self.lr_fns["predictor"],
      lagrange_lr=t.lagrange_lr,
      weight_decay=t.weight_decay,
      grad_clip=t.grad_clip,
      b2=t.adam_b2,
      frozen=frozen,
      predictor_bias_schedule=self.lr_fns.get("predictor_bias"),
    )
    self.step_cfg = StepConfig(
      ifp,
      target_warmup_steps=int(t.target_warmup_frac * self.total_steps),
      seed=config.seed,
      frozen=tuple(frozen),
    )
    self.ckpt = Checkpointer(
      self.workdir / "checkpoints",
      max_to_keep=t.keep_checkpoints + 1,  # + the newest, not yet confirmed by the next step
      async_save=t.async_checkpoint,
    )
    self._unconfirmed: int | None = None  # saved step whose state no step has used yet
    self._stop_requested = False

  # --- state ------------------------------------------------------------------------------
  def _scope(self):
    return _Scope(self.mesh)

  def init_or_restore(self):
    with self._scope():
      abstract, shardings = abstract_state(self.ifp, self.tx, self.mesh)
      if self.ckpt.latest_step() is not None:
        state, meta, data_state = self.ckpt.restore(abstract, check_meta=self._check_resume)
        log.info("resumed from step %d (%s)", meta["step"], self.ckpt.directory)
        self._unconfirmed = int(meta["step"])
        return state, shardings, data_state
      pretrained = self.pretrained
      if self.config.train.get("warm_start", ""):
        pretrained = self._warm_start(pretrained)
      state, shardings = init_state(
        self.ifp, self.tx, self.mesh, jax.random.key(self.config.seed), pretrained
      )
      return state, shardings, None

  def _warm_start(self, pretrained: dict) -> dict:
    """The masks' initial logits from calibration statistics (train/warm_start.py)."""
    t0, t = time.perf_counter(), self.config.train
    stage = next(s for s in self.stages if s.steps > 0)
    # The whole stream (one host's slicing) on every host: all compute the same parameters.
    stream = self._iterator(stage, host=(0, 1))
    kw = dict(n_rows=int(t.warm_start_rows), scale=float(t.warm_start_scale))
    if t.warm_start == "griffin":
      backbone = pretrained["predictor"]["backbone"]
      overrides, stats = warm_start.griffin_warm_start(
        self.ifp, pretrained["llm"], backbone, stream, seed=int(self.config.seed), **kw
      )
    else:
      overrides, stats = warm_start.calibration_warm_start(
        self.ifp, pretrained["llm"], stream, **kw
      )
    log.info(
      "warm start %r: GRIFFIN scores over %d %s rows (%d tokens) in %.1fs%s",
      t.warm_start,
      stats["rows"],
      stage.name,
      stats["tokens"],
      time.perf_counter() - t0,
      "".join(f"; {k} {v:.3g}" for k, v in stats.items() if k not in ("rows", "tokens")),
    )
    if jax.process_index() == 0:  # what the start measured, for the results page
      run_files.write_atomic(
        self.workdir / "warm_start.json", json.dumps({"kind": t.warm_start, **stats}, indent=1)
      )
    return warm_start.merge(pretrained, overrides)

  def _check_resume(self, meta: dict) -> None:
    check_resume(
      meta.get("config") or {},
      json.loads(self.config.to_json_best_effort()),
      step=int(meta.get("step", -1)),
      allowed=self.config.train.get("allow_config_change", ""),
      defaults=json.loads(default_config().to_json_best_effort()),
    )

  def _iterator(self, stage: Stage, split: str | None = None, num_epochs=None, *, host=None):
    """This host's slice of a stage's stream; `host=(index, count)` reads another slicing."""
    index, count = host or (jax.process_index(), jax.process_count())
    return build_iterator(
      self.config.data,
      self.tokenizer,
      kind=stage.name,
      seq_len=self.config.train.seq_len,
      batch_size=self.host_batch,
      process_index=index,
      process_count=count,
      seed=self.config.seed,
      split=split,
      num_epochs=num_epochs,
      predictor_tokenizer=self.predictor_tokenizer,
    )

  def _meta(self, step: int, stage: Stage) -> dict:
    return {
      "step": step,
      "stage": stage.name,
      "total_steps": self.total_steps,
      "config": json.loads(self.config.to_json_best_effort()),
      "ifp": self.ifp.to_dict(),
      "tokenizer": self.config.data.tokenizer,
      "predictor_tokenizer": self.predictor_tokenizer_spec,
    }

  def _save(self, step, state, stage, it, force=False, metrics=None):
    """Saves only a healthy state: a diverged one stops the job (DivergenceError)."""
    problem = self._unhealthy(step, state, metrics)
    # Each host reads its own slice, so each host's position is saved (index = process index).
    data_state = _data_state(stage, it)
    if problem == SUSPECT:
      log.warning("step %d: gradient norm exactly 0; not saved as a good checkpoint", step)
      return
    if problem:
      self._diverged(step, state, stage, data_state, problem)
    if self.ckpt.save(step, state, self._meta(step, stage), data_state, force=force):
      self._unconfirmed = step

  def _confirm(self, step: int, metrics: dict) -> str | None:
    """Step `step` ran on the state of checkpoint `step - 1`: its metrics confirm that
    checkpoint or move it aside (a finite state can still be garbage: params ~1e38, or dead)."""
    problem = self._unhealthy(step, None, metrics)
    if self._unconfirmed == step - 1:
      if problem:
        self.ckpt.set_aside(step - 1, self.workdir / "suspect_checkpoints", problem)
      self._unconfirmed = None
    return problem

  # --- health -----------------------------------------------------------------------------
  def _unhealthy(self, step: int, state, metrics: dict | None) -> str | None:
    """Why the state after `step` must not be saved, or None. `metrics`: host floats of `step`
    (their loss/gradient are those of the state before the update)."""
    t = self.config.train
    if metrics is not None:
      loss, gnorm = metrics.get("loss", 0.0), metrics.get("grad_norm", 0.0)
      if not (math.isfinite(loss) and math.isfinite(gnorm)):
        return f"loss {loss}, gradient norm {gnorm}"
      if t.get("divergence_max_loss", 0) and loss > t.divergence_max_loss:
        return f"loss {loss:.4g} > train.divergence_max_loss={t.divergence_max_loss}"
      if t.get("divergence_max_grad_norm", 0) and gnorm > t.divergence_max_grad_norm:
        return (
          f"gradient norm {gnorm:.4g} > train.divergence_max_grad_norm={t.divergence_max_grad_norm}"
        )
      if self._nothing_trains:
        return None if self._state_finite(state) else "non-finite values in the train state"
      dead_checks = int(t.get("divergence_dead_checks", 0))
      if step != self._dead_last:  # one count per step (log and save may both look)
        self._dead_last = step
        self._dead_run = self._dead_run + 1 if gnorm == 0.0 else 0
      if dead_checks and self._dead_run >= dead_checks:
        return (
          f"dead model: gradient norm exactly 0 at {self._dead_run} checked steps in a row "
          f"(loss {loss:.4f}; ln V = {math.log(self.ifp.llm.vocab_size):.4f})"
        )
      if gnorm == 0.0:
        return SUSPECT
    if not self._state_finite(state):
      return "non-finite values in the train state"
    return None

  def _state_finite(self, state) -> bool:
    if state is None:
      return True
    with self._scope():
      return bool(jax.device_get(_all_finite(state)))

  def _diverged(self, step, state, stage, data_state, problem: str):
    """Never over a good checkpoint: the bad state goes aside (optionally), then stop."""
    self.ckpt.wait()  # pending good saves land first, so "last good" below is true
    aside = ""
    if self.config.train.get("save_diverged", True):
      bad = Checkpointer(self.workdir / "diverged", max_to_keep=1, async_save=False)
      try:
        bad.save(step, state, self._meta(step, stage), data_state, force=True)
        bad.close()
        aside = f"; the diverged state is in {bad.directory}/{step} for diagnosis"
      except Exception as e:  # noqa: BLE001 - diagnosis only: never hide the divergence
        aside = f"; saving the diverged state aside failed ({e})"
    good = self.ckpt.latest_step()
    last = (
      f"the last good checkpoint is step {good} in {self.ckpt.directory} (a rerun resumes there)"
      if good is not None
      else "there is no good checkpoint yet (a rerun starts afresh)"
    )
    raise DivergenceError(f"training diverged at step {step} ({problem}); {last}{aside}")

  # --- loop -------------------------------------------------------------------------------
  def run(self, max_steps: int | None = None) -> dict[str, Any]:
    """Trains to the end (or `max_steps` more steps); returns a summary dict.

    Holds the workdir lock throughout (a second job on this workdir raises WorkdirLockedError).
    """
    if max_steps is not None and max_steps < 0:
      raise ValueError(f"max_steps={max_steps} must be >= 0")
    lock = run_files.WorkdirLock(self.workdir).acquire() if self.is_main else None
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    failed = True
    try:
      out = self._run(max_steps)
      failed = False
      return out
    finally:
      signal.signal(signal.SIGTERM, previous)
      try:
        self.ckpt.wait()
      except Exception:  # noqa: BLE001 - a save error is raised already or by _run
        if not failed:
          raise
      finally:
        if lock is not None:
          lock.release()

  def _on_sigterm(self, signum, frame):
    log.warning("SIGTERM: saving a checkpoint at the next step boundary, then exiting")
    self._stop_requested = True

  def _run(self, max_steps):
    t = self.config.train
    self._dead_run, self._dead_last = 0, -1
    state, shardings, data_state = self.init_or_restore()
    if self.is_main:  # only now: a refused launch leaves the run's record untouched
      run_files.write_config(self.workdir, self.config.to_json_best_effort(indent=2))
    step = int(jax.device_get(state.step))
    # Every remaining stage's data is built/checked before the first step (bad SFT data must
    # not wait for the end of CPT).
    iterators = {s.name: self._iterator(s) for s in self.stages if s.steps > 0 and step < s.end}
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
      it = iterators.pop(stage.name)
      if data_state is not None and data_state.get("stage") == stage.name:
        it.set_state(_host_position(data_state))
      data_state = None
      logger.start_stage(stage.name, stage.end - step)
      t0, tokens_since = time.perf_counter(), 0
      first_step = step + 1
      while step < min(stage.end, budget_end):
        batch = next(it)
        if step + 1 == first_step and self.is_main:  # what the model sees (data/batch_text.py)
          self._write_batch_text(batch, stage.name, first_step)
        with self._scope():
          state, metrics = train(state, sharding.host_to_global(batch, self.mesh))
        step += 1
        tokens_since += batch["input_ids"].size * jax.process_count()
        self.ckpt.check()  # a failed async save stops the job now, not at the next save
        m = None
        if self._unconfirmed == step - 1:  # this step used a saved state: does it hold up?
          m = {k: float(v) for k, v in jax.device_get(metrics).items()}
          problem = self._confirm(step, m)
          if problem and problem != SUSPECT:
            m.update(step=step, stage=stage.name, tokens_per_sec=0.0)
            logger.log(m, remaining=min(stage.end, budget_end) - step)
            logger.close()
            self._diverged(step, state, stage, _data_state(stage, it), problem)
        if step % t.log_every == 0 or step == stage.end:
          m = m or {k: float(v) for k, v in jax.device_get(metrics).items()}
          dt = time.perf_counter() - t0
          m.update(step=step, stage=stage.name, tokens_per_sec=tokens_since / max(dt, 1e-9))
          m.update(it.take_window())  # distinct documents / largest document share since last log
          if "data_real_frac" in m:  # padding left out
            m["real_tokens_per_sec"] = m["tokens_per_sec"] * m["data_real_frac"]
          if t.eval_rows and (step == stage.end or (t.eval_every and step % t.eval_every == 0)):
            m.update(self._eval_metrics(state, stage, evaluate))
          logger.log(m, remaining=min(stage.end, budget_end) - step)
          t0, tokens_since = time.perf_counter(), 0
          problem = self._unhealthy(step, state, m)
          if problem and problem != SUSPECT:
            logger.close()
            self._diverged(step, state, stage, _data_state(stage, it), problem)
        save_due = step % t.checkpoint_every == 0 or step in (stage.end, budget_end)
        if save_due or self._stop_requested:
          if m is None:  # the health test needs this step's loss and gradient norm
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
          # Also at the end of a --max_steps budget, so a bounded run can be continued.
          self._save(step, state, stage, it, force=self._stop_requested, metrics=m)
        if self._stop_requested:
          self.ckpt.wait()
          logger.close()
          log.warning("stopped by SIGTERM at step %d; checkpoint written", step)
          sys.exit(143)
      summary["stages"][stage.name] = s = logger.stage_summary(stage.name)
      if t.eval_rows and step == stage.end and s:
        last = logger.last_row(stage.name)
        s["train_loss"] = s["last_loss"]
        for key in ("heldout_loss", "heldout_rows", "heldout_text_loss"):
          if key in last:
            s[key] = last[key]
        s["eval_loss_hard_masks"] = s.get("heldout_loss")  # older name, read by launch/benchmarks
        if s.get("heldout_loss") is not None:
          s["heldout_gap"] = s["heldout_loss"] - s["train_loss"]
      stats = getattr(it, "stats", None) or {}  # DataIterator.stats (a property)
      if s:  # shown by launch.train, kept in summary.json
        s["data_skipped"] = {
          "malformed_lines": sum((stats.get("skipped_lines") or {}).values()),
          "binary_files": sum((stats.get("skipped_binary_files") or {}).values()),
        }
    self.ckpt.wait()
    logger.close()
    summary.update(
      step=step, checkpoint=str(self.ckpt.directory), latest_checkpoint_step=self.ckpt.latest_step()
    )
    if self.is_main:
      plot_loss_curves(self.workdir / "metrics.jsonl", self.workdir / "loss_curve.png")
      summary = run_files.merge_summary(self.workdir / "summary.json", summary)
    return summary

  def _write_batch_text(self, batch: dict, stage: str, step: int) -> None:
    path = self.workdir / "batches" / f"{stage}_step{step}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = batch_text.render_rows(batch, self.tokenizer, self.predictor_tokenizer)
    path.write_text(f"# {stage}: the first batch of this invocation (step {step})\n" + text)

  def _held_out_sample(self, name: str) -> list | None:
    """The fixed held-out sample of stage `name` ("cpt" | "sft"), built once per run."""
    if name not in self._heldout:
      t = self.config.train
      try:
        self._heldout[name] = heldout.held_out_sample(
          self.config.data,
          self.tokenizer,
          kind=name,
          seq_len=t.seq_len,
          batch_size=self.host_batch,
          rows=max(t.eval_rows // jax.process_count(), 1),
          seed=self.config.seed,
          process_index=jax.process_index(),
          process_count=jax.process_count(),
          predictor_tokenizer=self.predictor_tokenizer,
        )
      except ValueError as e:  # e.g. a source without an eval split
        log.warning("no held-out eval for stage %s: %s", name, e)
        self._heldout[name] = None
      if jax.process_count() > 1:  # every host runs the same number of global eval steps
        sample = self._heldout[name]
        n = min(distributed.allgather_json(0 if sample is None else len(sample)))
        self._heldout[name] = sample[:n] if sample and n else None
    return self._heldout[name]

  def _eval(self, state, name: str, evaluate) -> dict[str, float] | None:
    """Held-out loss of stage `name`'s sample with hard top-k masks (what pruned inference
    computes), or None without an eval split."""
    batches = self._held_out_sample(name)
    if batches is None:
      return None

    def loss_fn(batch):
      with self._scope():
        return jax.device_get(evaluate(state.params, sharding.host_to_global(batch, self.mesh)))

    return heldout.held_out_loss(batches, loss_fn)

  def _eval_metrics(self, state, stage: Stage, evaluate) -> dict[str, float]:
    """heldout_loss (this stage's eval split) and, in SFT, heldout_text_loss (the CPT text
    sample: forgetting of language modelling)."""
    out = {}
    ev = self._eval(state, stage.name, evaluate)
    if ev is not None:
      out.update(heldout_loss=ev["loss"], heldout_rows=float(ev["rows"]))
    if stage.name == "sft" and self.config.cpt.steps > 0:
      text = self._eval(state, "cpt", evaluate)
      if text is not None:
        out["heldout_text_loss"] = text["loss"]
    return out


def _data_state(stage: Stage, it) -> dict:
  return {"stage": stage.name, "iterators": distributed.allgather_json(it.get_state())}


@jax.jit
def _all_finite(tree) -> jax.Array:
  """True iff every floating leaf of `tree` is finite (one scalar, not a host copy)."""
  leaves = [x for x in jax.tree.leaves(tree) if jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)]
  return jax.numpy.all(jax.numpy.stack([jax.numpy.isfinite(x).all() for x in leaves]))


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
  return ifp.k / ifp.llm.intermediate_size if ifp.has_masks else 1.0
