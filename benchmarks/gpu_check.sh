#!/usr/bin/env bash
# One prepared GPU check: install the CUDA build of the pinned JAX, then run the test suite, the
# benchmarks, a short real training run and the XLA:GPU vs XLA:CPU memory comparison, all on
# the GPU(s) of this machine. Results go to $OUT (if set, e.g. by a CI runner) or
# benchmarks/results/gpu_<date>/, with a summary in gpu_<date>.txt there.
#
#   bash benchmarks/gpu_check.sh            # full
#   QUICK=1 bash benchmarks/gpu_check.sh    # benchmarks with --quick, fewer training steps
#
# Environment: JAX_CUDA_EXTRA (cuda12 | cuda13; default from the driver's CUDA version),
# PIP_FIND_LINKS / PIP_NO_INDEX (offline machines: a folder of wheels), SKIP_INSTALL=1 (the
# .venv already has a working CUDA jaxlib), PYTEST_ARGS (extra pytest arguments), QUICK=1.
# Exit status: non-zero only when the GPU setup itself fails; test and benchmark failures are
# recorded in the summary (and their logs) so one run always yields a full report.
set -uo pipefail
cd "$(dirname "$0")/.."

STAMP=$(date +%Y%m%d_%H%M%S)
RESULTS=${OUT:-benchmarks/results}/gpu_$STAMP
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/gpu_$STAMP.txt
PY=.venv/bin/python
JAX_VERSION=$(sed -n 's/^jax==\([0-9.]*\).*/\1/p' requirements.txt)
QUICK_FLAG=""
[ "${QUICK:-0}" = 1 ] && QUICK_FLAG="--quick"

say() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME CMD...: run, log to $RESULTS/NAME.log, record status and duration
  local name=$1
  shift
  local t0=$SECONDS rc=0
  echo "[gpu_check] $name: $*" >&2
  "$@" >"$RESULTS/$name.log" 2>&1 || rc=$?
  say "$(printf '%-28s %s  (%ds)  log: %s' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED rc=$rc")" \
    $((SECONDS - t0)) "$RESULTS/$name.log")"
  return $rc
}

say "ifp_jax GPU check $STAMP on $(hostname); git $(git rev-parse --short HEAD 2>/dev/null)"
if ! nvidia-smi >"$RESULTS/nvidia_smi.txt" 2>&1; then
  say "nvidia-smi failed: no usable NVIDIA GPU here (see $RESULTS/nvidia_smi.txt)"
  exit 1
fi
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sort | uniq -c)"

# --- install -----------------------------------------------------------------------------------
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step setup_env bash launch/setup_env.sh || exit 1
  if [ -z "${JAX_CUDA_EXTRA:-}" ]; then
    cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
    JAX_CUDA_EXTRA=$([ "${cuda_major:-12}" -ge 13 ] && echo cuda13 || echo cuda12)
  fi
  step install_jax_cuda "$PY" -m pip install "jax[$JAX_CUDA_EXTRA]==$JAX_VERSION" || exit 1
fi
step jax_devices "$PY" -c '
import jax
jax.print_environment_info()
print(jax.devices())
assert jax.default_backend() == "gpu", jax.default_backend()
' || { say "JAX does not see a GPU: see $RESULTS/jax_devices.log"; exit 1; }
NGPU=$("$PY" -c 'import jax; print(jax.device_count())' 2>/dev/null)
say "JAX $JAX_VERSION sees $NGPU GPU device(s)"

# --- tests ---------------------------------------------------------------------------------------
# tests/conftest.py asks for 8 fake CPU devices; with JAX_PLATFORMS unset JAX runs on the GPUs
# instead, so tests written for exactly 8 devices fail on other GPU counts (listed in the log).
step pytest_gpu "$PY" -m pytest tests -rfE -p no:cacheprovider ${PYTEST_ARGS:-}
grep -E "^(FAILED|ERROR)|passed|failed" "$RESULTS/pytest_gpu.log" | tail -40 >>"$SUMMARY"
# The same suite on the CPU backend of this machine (the reference configuration).
step pytest_cpu env JAX_PLATFORMS=cpu "$PY" -m pytest tests -q -p no:cacheprovider \
  ${PYTEST_ARGS:-}
tail -3 "$RESULTS/pytest_cpu.log" >>"$SUMMARY"

# --- benchmarks ------------------------------------------------------------------------------
for bench in benchmarks/*.py; do
  case "$(basename "$bench")" in bench_json.py | hf_peer.py) continue ;; esac  # helper modules
  name=bench_$(basename "$bench" .py)
  # repro.py writes runs and results; keep them here, away from the committed CPU results.
  extra=(--json="$RESULTS/$name.json")
  [ "$(basename "$bench")" = repro.py ] && extra+=(--workdir="$RESULTS/repro_runs" \
    --out="$RESULTS/repro")
  # repro_smollm2.py: real SmolLM2 weights; without --quick its --scale preset (bf16, more docs).
  if [ "$(basename "$bench")" = repro_smollm2.py ]; then
    # Two trained runs (the static table and the distilled IFP, which also gives its mean
    # mask): the default seven would not fit one lease's device time at --scale's 300 steps.
    extra=(--workdir="$RESULTS/repro_smollm2_runs" --out="$RESULTS/repro_smollm2" \
      --stages=training_free,regime_a --trained=static_soft_warm_lr100,ifp_distill)
    [ -z "${QUICK_FLAG:-}" ] && extra+=(--scale)
  fi
  # sft_packing.py: the packed / unpacked SFT step in the GPU's compute dtype.
  [ "$(basename "$bench")" = sft_packing.py ] && extra+=(--dtype=bfloat16)
  if grep -q -- "--quick" "$bench"; then
    step "$name" "$PY" "$bench" $QUICK_FLAG "${extra[@]}"
  else
    step "$name" "$PY" "$bench" "${extra[@]}"
  fi
  cat "$RESULTS/$name.log" >>"$SUMMARY"
done

# --- the train step in bf16 (MFU against the GPU's bf16 matmul peak), and the FFN's custom VJP
# (ifp_jax/model/swiglu.py) against its autodiff backward: on XLA:CPU it is 1.18x faster; on a GPU
# it is unmeasured, so this decides whether GPUs should keep it.
step train_step_bf16_vjp "$PY" benchmarks/train_throughput.py --dtype=bfloat16 --batch=8 \
  --seq=1024 --variants=jax_ifp,jax_ifp_autodiff_ffn,jax_dense,jax_dense_autodiff_ffn \
  $QUICK_FLAG --json="$RESULTS/bench_train_step_bf16_vjp.json"
cat "$RESULTS/train_step_bf16_vjp.log" >>"$SUMMARY"

# --- attention implementations (ifp_jax/model/attention.py) on the GPU ----------------------
# Agreement (f32: XLA both ways; bf16: dot_product takes cuDNN's fused kernel) with causal,
# left-padding and segment masks, and fwd+bwd time per implementation at the SmolLM2 shape.
step attention_impls "$PY" - <<'EOF'
import time, jax, jax.numpy as jnp, numpy as np
from ifp_jax.model import attention as A
b, t, n, kv, hd = 4, 1024, 9, 3, 64
ks = jax.random.split(jax.random.key(0), 3)
q, k, v = (jax.random.normal(kk, (b, t, m, hd)) for kk, m in zip(ks, (n, kv, kv)))
valid = jnp.arange(t)[None] >= jnp.array([[0], [7], [100], [500]])
seg = jnp.cumsum(jnp.arange(t)[None] % 300 == 0, axis=1).repeat(b, 0)
masks = {"causal": A.make_mask(jnp.arange(t), jnp.ones((b, t), bool)),
         "padding": A.make_mask(jnp.arange(t), valid),
         "segments": A.make_mask(jnp.arange(t), valid, seg, seg)}
for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
  qd, kd, vd = (x.astype(dtype) for x in (q, k, v))
  for name, m in masks.items():
    outs = {}
    for impl in ("xla", "dot_product"):
      f = jax.jit(jax.value_and_grad(lambda q_, i=impl: A.attend(q_, kd, vd, m, impl=i)
                                     .astype(jnp.float32).sum()))
      jax.block_until_ready(f(qd))
      t0 = time.perf_counter()
      for _ in range(10):
        jax.block_until_ready(f(qd))
      outs[impl] = (np.asarray(A.attend(qd, kd, vd, m, impl=impl), np.float32),
                    (time.perf_counter() - t0) / 10 * 1e3)
    diff = float(np.abs(outs["xla"][0] - outs["dot_product"][0]).max())
    print(f"{jnp.dtype(dtype).name:8s} {name:9s} max|xla - dot_product| {diff:.2e} "
          f"(tol {tol}) fwd+bwd ms: xla {outs['xla'][1]:.2f}, dot_product "
          f"{outs['dot_product'][1]:.2f}  {'ok' if diff <= tol else 'MISMATCH'}")
    assert diff <= tol, (dtype, name, diff)
EOF
cat "$RESULTS/attention_impls.log" >>"$SUMMARY"

# --- a real training run (bf16 on the GPU) -------------------------------------------------
STEPS=$([ "${QUICK:-0}" = 1 ] && echo 20 || echo 100)
step train_tiny_bf16 "$PY" -m launch.train --config=configs/tiny.py \
  --workdir="$RESULTS/tiny_bf16" --config.model.dtype=bfloat16 --config.cpt.steps="$STEPS" \
  --config.sft.steps="$STEPS" --config.train.log_every=10
tail -8 "$RESULTS/train_tiny_bf16.log" >>"$SUMMARY"
step train_smollm2_gpu "$PY" -m launch.train --config=configs/smollm2_135m.py:gpu \
  --workdir="$RESULTS/smollm2_gpu" --config.train.batch_size=$((16 * NGPU)) \
  --config.cpt.steps="$STEPS" --config.sft.steps=0 --config.train.log_every=10 \
  --config.train.eval_rows=0
tail -8 "$RESULTS/train_smollm2_gpu.log" >>"$SUMMARY"

# --- memory: XLA:GPU vs the XLA:CPU estimate of docs/scaling.md, same single-device program ---
# One GPU (CUDA_VISIBLE_DEVICES) and one fake CPU device compile the same program: how far the
# CPU temporaries of the docs' table are from XLA:GPU's.
step memory_gpu_vs_cpu env CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" "$PY" - <<'EOF'
import importlib.util, json, os, subprocess, sys, tempfile
sys.path.insert(0, os.getcwd())
import jax
from ifp_jax.train import compile_check

def load(path, recipe, batch):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(recipe)
  c.mesh, c.train.batch_size = (1, 1, 1), batch
  c.lock()
  return c

assert jax.device_count() == 1, jax.devices()
rows = []
for path, recipe, batch in [("configs/smollm2_135m.py", "gpu", 16),
                            ("configs/paper_9b_to_3b.py", "h100x8", 2)]:
  name = f"{os.path.basename(path)}:{recipe} batch {batch}"
  rows.append((f"{name} XLA:GPU", compile_check.compile_train_step(load(path, recipe, batch)),
               None))
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "r.json")
    env = dict(os.environ, JAX_PLATFORMS="cpu", IFP_COMPILE_CHECK_CHILD="1",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    subprocess.run([sys.executable, "-m", "launch.compile_check", f"--config={path}:{recipe}",
                    "--num_devices=1", "--mesh=1,1,1", f"--config.train.batch_size={batch}",
                    f"--json_out={out}"], env=env, check=True)
    d = json.load(open(out))
    d.pop("peak_bytes")
  rows.append((f"{name} XLA:CPU", compile_check.Report(**d), None))
print(compile_check.markdown_table(rows))
EOF
cat "$RESULTS/memory_gpu_vs_cpu.log" >>"$SUMMARY"

say "results: $RESULTS (summary $SUMMARY)"
