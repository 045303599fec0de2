"""Our IFP train step under mimalloc vs glibc malloc (ifp_jax/train/allocator.py).

  python benchmarks/allocator_ab.py [--rounds=4 --steps=6] [--quick] [--out=F.md --json=F.json]

An allocator is chosen before the interpreter starts, so the two cannot share one process: each
round starts one child per allocator (order reversed every other round), and each child builds
the jax_ifp step of train_throughput.py (SmolLM2 shape, 2 x 256, f32; tiny shape with --quick),
runs 2 warm-up steps and --steps timed ones, and reports its median step time, minor page
faults and kernel (sys) CPU time per step. Ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bench_json  # noqa: E402

# argparse, not absl flags: the child imports train_throughput, whose absl flags share names.
PARSER = argparse.ArgumentParser(description=__doc__.split("\n")[0])
PARSER.add_argument("--rounds", type=int, help="Alternating rounds (default 4; 1 with --quick).")
PARSER.add_argument("--steps", type=int, help="Timed steps per child (default 6; 2 with --quick).")
PARSER.add_argument("--quick", action="store_true", help="Smoke run: tiny shape, 1 round, 2 steps.")
PARSER.add_argument("--out", help="Also write the table (with command, machine, date) here.")
PARSER.add_argument("--json", help="Also write the figures as JSON (keys: benchmarks/README.md).")
PARSER.add_argument("--child", help=argparse.SUPPRESS)  # internal: one child of this shape

ALLOCATORS = ("mimalloc", "system")


def child(shape: str, steps: int) -> None:
  import resource  # train_throughput's imports are heavy: only the children make them

  import train_throughput as tt

  from ifp_jax.train import allocator

  tt.FLAGS(["train_throughput"])
  config, _ = tt.load_config(shape, "float32")
  ifp, pretrained = tt.resolve_models(config, tt.load_tokenizer(config.data.tokenizer))
  batch_size, seq = (2, 256) if shape == "smollm2" else (16, 128)
  batch = tt.cpt_batch(ifp.llm.vocab_size, batch_size, seq, config.data.num_chunks)
  runner = tt.JaxVariant(ifp, config, pretrained, batch)
  runner.step()
  runner.step()
  times, faults, sys_s = [], [], []
  for _ in range(steps):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    runner.step()
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    times.append(t1 - t0)
    faults.append(r1.ru_minflt - r0.ru_minflt)
    sys_s.append(r1.ru_stime - r0.ru_stime)
  print(
    "CHILD_RESULT "
    + json.dumps(
      dict(
        allocator="mimalloc" if allocator.active() else "system",
        step_s=statistics.median(times),
        minor_faults_per_step=statistics.median(faults),
        sys_s_per_step=statistics.median(sys_s),
      )
    )
  )


def run_child(name: str, shape: str, steps: int) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("IFP_ALLOCATOR", "LD_PRELOAD"))}
  env["IFP_ALLOCATOR"] = name
  cmd = [sys.executable, __file__, f"--child={shape}", f"--steps={steps}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD_RESULT ")), None)
  if proc.returncode != 0 or line is None:
    raise RuntimeError(f"{name} child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
  rec = json.loads(line.split(" ", 1)[1])
  if rec["allocator"] != name:
    raise RuntimeError(f"child asked for {name} ran under {rec['allocator']}")
  return rec


def main(FLAGS):
  if FLAGS.child:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    child(FLAGS.child, FLAGS.steps)
    return
  shape = "tiny" if FLAGS.quick else "smollm2"
  rounds = FLAGS.rounds or (1 if FLAGS.quick else 4)
  steps = FLAGS.steps or (2 if FLAGS.quick else 6)
  load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
  recs = {a: [] for a in ALLOCATORS}
  for r in range(rounds):
    for name in ALLOCATORS if r % 2 == 0 else ALLOCATORS[::-1]:
      recs[name].append(run_child(name, shape, steps))
    print(
      f"  round {r + 1}/{rounds}: "
      + ", ".join(f"{a} {recs[a][-1]['step_s'] * 1e3:.0f} ms" for a in ALLOCATORS),
      flush=True,
    )
  med = {
    a: {k: statistics.median(x[k] for x in recs[a]) for k in recs[a][0] if k != "allocator"}
    for a in ALLOCATORS
  }
  speedup = statistics.median(
    s["step_s"] / m["step_s"] for m, s in zip(recs["mimalloc"], recs["system"])
  )
  lines = [
    "| allocator | ms/step (median) | minor page faults / step | kernel CPU s / step |",
    "|---|---|---|---|",
  ]
  for a in ALLOCATORS:
    m = med[a]
    lines.append(
      f"| {a} | {m['step_s'] * 1e3:.0f} | {m['minor_faults_per_step']:.0f} | "
      f"{m['sys_s_per_step']:.2f} |"
    )
  lines += ["", f"mimalloc / system step speed (median of per-round ratios): {speedup:.3f}"]
  lines.append(
    "per-round ms/step: "
    + "; ".join(f"{a} " + " ".join(f"{x['step_s'] * 1e3:.0f}" for x in recs[a]) for a in ALLOCATORS)
  )
  table = "\n".join(lines)
  print("\n" + table)
  cpu = next(
    (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln), ""
  )
  header = f"{os.cpu_count()} CPUs ({cpu}), load avg {load0}"
  if FLAGS.out:
    cmd = " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    pathlib.Path(FLAGS.out).write_text(
      f"# Allocator A/B: our IFP train step ({shape})\n\n"
      f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n- command: `{cmd}`\n"
      f"- machine: {header}\n- {rounds} rounds x 2 children, {steps} timed steps each\n\n"
      f"{table}\n"
    )
    print(f"wrote {FLAGS.out}")
  bench_json.write(
    FLAGS.json,
    "allocator_ab",
    header,
    shape=shape,
    rounds=rounds,
    steps=steps,
    allocators=med,
    ratios={"mimalloc_over_system_step_speed": speedup},
  )


if __name__ == "__main__":
  main(PARSER.parse_args())
