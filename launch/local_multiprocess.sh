#!/usr/bin/env bash
# N JAX processes on this machine, each with D fake CPU devices, joined by jax.distributed
# (gloo CPU collectives): the multi-host code path without a cluster.
#
#   bash launch/local_multiprocess.sh N D -- --config=configs/tiny.py --workdir=runs/mp [...]
#
# Runs `python -m launch.train ARGS` N times with IFP_COORDINATOR=127.0.0.1:PORT,
# IFP_NUM_PROCESSES=N, IFP_PROCESS_ID=i (read by ifp_jax/train/distributed.py), JAX_PLATFORMS=cpu and
# XLA_FLAGS=--xla_force_host_platform_device_count=D (after the caller's other XLA_FLAGS, which
# are kept); the global mesh has N*D devices.
# Environment: PYTHON (default .venv/bin/python if present, else python3), IFP_PORT (default: a
# free port), IFP_LOG_DIR (default: a new temp dir; process i logs to process_i.log there;
# process 0 is also echoed to stdout), IFP_MODULE (default launch.train).
# IFP_KILL_GRACE (default 20): seconds between SIGTERM and SIGKILL when stopping the others.
# Exit status: 0 if every process exits 0, else the first non-zero status (the others are
# stopped: SIGTERM, then SIGKILL after the grace period). Linux (/proc) only.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS -- launch.train args..." >&2
  exit 2
fi
N=$1
D=$2
shift 2
[ "${1:-}" = "--" ] && shift

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
MODULE=${IFP_MODULE:-launch.train}
PORT=${IFP_PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
LOG_DIR=${IFP_LOG_DIR:-$(mktemp -d -t ifp_mp.XXXXXX)}
mkdir -p "$LOG_DIR"
echo "[local_multiprocess] $N processes x $D CPU devices, coordinator 127.0.0.1:$PORT," \
     "logs in $LOG_DIR" >&2

# The caller's XLA flags, less any device count (each process gets D).
BASE_XLA_FLAGS=""
for f in ${XLA_FLAGS:-}; do
  case "$f" in --xla_force_host_platform_device_count=*) ;; *) BASE_XLA_FLAGS+="$f " ;; esac
done

GRACE=${IFP_KILL_GRACE:-20}
pids=()
stop_at=""  # once set: SIGTERM sent at this time; SIGKILL whatever still runs GRACE s later

exited() {  # true when the child has exited (a zombie not yet reaped counts as exited)
  local state
  state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" = "Z" ]
}

stop_all() {  # SIGTERM (the trainer saves a checkpoint at the next step), SIGKILL later
  [ -n "$stop_at" ] && return
  stop_at=$SECONDS
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
trap 'echo "[local_multiprocess] signal: stopping all processes" >&2; stop_all; status=143' \
  TERM INT

status=0
for ((i = 0; i < N; i++)); do
  IFP_COORDINATOR="127.0.0.1:$PORT" IFP_NUM_PROCESSES="$N" IFP_PROCESS_ID="$i" \
  JAX_PLATFORMS=cpu XLA_FLAGS="${BASE_XLA_FLAGS}--xla_force_host_platform_device_count=$D" \
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m "$MODULE" "$@" >"$LOG_DIR/process_$i.log" 2>&1 &
  pids+=($!)
done

# Echo process 0's log while the job runs.
tail -n +1 -f "$LOG_DIR/process_0.log" --pid="${pids[0]}" &
tail_pid=$!

# Poll: a process that fails (or a signal to this script) stops all the others; a process stuck
# in a collective with a dead peer ignores SIGTERM, so SIGKILL follows after GRACE seconds.
declare -A reaped=()
while [ "${#reaped[@]}" -lt "$N" ]; do
  for p in "${pids[@]}"; do
    if [ -z "${reaped[$p]:-}" ] && exited "$p"; then
      rc=0
      wait "$p" || rc=$?
      reaped[$p]=$rc
      if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
        echo "[local_multiprocess] pid $p exited with $rc; stopping the others" >&2
        stop_all
      fi
    fi
  done
  if [ -n "$stop_at" ] && [ $((SECONDS - stop_at)) -ge "$GRACE" ]; then
    for p in "${pids[@]}"; do
      [ -z "${reaped[$p]:-}" ] && kill -KILL "$p" 2>/dev/null || true
    done
  fi
  sleep 0.5
done
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
exit "$status"
