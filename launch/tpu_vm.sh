#!/usr/bin/env bash
# Cloud TPU VM slice: create it, copy this repo to every worker, set up, train, delete.
#
#   export TPU_NAME=ifp-v5p ZONE=us-east5-a ACCELERATOR=v5p-64 PROJECT=my-project
#   bash launch/tpu_vm.sh create
#   bash launch/tpu_vm.sh setup            # copy the repo (git HEAD + local changes), make .venv
#   bash launch/tpu_vm.sh train --config=configs/paper_9b_to_3b.py:v5p_64 --workdir=/mnt/ifp/run1
#   bash launch/tpu_vm.sh run '.venv/bin/python -c "import jax; print(jax.device_count())"'
#   bash launch/tpu_vm.sh delete
#
# Every worker runs the same `python -m launch.train ...` with IFP_DISTRIBUTED=1:
# ifp_jax/train/distributed.py then calls jax.distributed.initialize(), which reads the slice's
# topology from the TPU VM metadata (one process per host, 4 chips each on v5p).
# The workdir must be one directory that every worker sees at the same path (Orbax writes each
# host's shards there and process 0 writes metrics): set GCS_BUCKET to mount a bucket with
# gcsfuse at $MOUNT (default /mnt/ifp) on every worker during `setup`, or mount Filestore/NFS
# yourself. The TFDS data dir stays local to each host (each host builds its own sources).
# torch (for the transformers parity tests and exports) comes from PyTorch's CPU index here.
#
# Environment: TPU_NAME, ZONE, ACCELERATOR (e.g. v5p-64 = 32 chips / 8 hosts), PROJECT
# (optional), RUNTIME (TPU software version; default v2-alpha-tpuv5 for v5p), GCS_BUCKET and
# MOUNT (optional), REMOTE_DIR (default ifp_jax, under the worker's home), SPOT=1 for spot VMs.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
ACCELERATOR=${ACCELERATOR:-v5p-64}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5}
REMOTE_DIR=${REMOTE_DIR:-ifp_jax}
MOUNT=${MOUNT:-/mnt/ifp}
JAX_VERSION=$(sed -n 's/^jax==\([0-9.]*\).*/\1/p' requirements.txt)
GCLOUD=(gcloud compute tpus tpu-vm)
COMMON=(--zone="$ZONE")
[ -n "${PROJECT:-}" ] && COMMON+=(--project="$PROJECT")

on_all() {  # run a shell command on every worker, in the repo copy
  "${GCLOUD[@]}" ssh "$TPU_NAME" "${COMMON[@]}" --worker=all \
    --command="cd ~/$REMOTE_DIR 2>/dev/null || true; $1"
}

quote_args() {  # "$@" as one shell-quoted string
  local out="" a
  for a in "$@"; do out+=" $(printf '%q' "$a")"; done
  echo "$out"
}

cmd=${1:-}
shift || true
case "$cmd" in
  create)
    extra=()
    [ "${SPOT:-0}" = 1 ] && extra+=(--spot)
    "${GCLOUD[@]}" create "$TPU_NAME" "${COMMON[@]}" --accelerator-type="$ACCELERATOR" \
      --version="$RUNTIME" "${extra[@]}"
    ;;
  setup)
    tarball=$(mktemp -t ifp_repo.XXXXXX.tar.gz)
    # Tracked and untracked-but-not-ignored files (what the working tree would commit).
    git ls-files -co --exclude-standard -z | tar --null -czf "$tarball" -T -
    "${GCLOUD[@]}" scp "$tarball" "$TPU_NAME:~/ifp_repo.tar.gz" "${COMMON[@]}" --worker=all
    rm -f "$tarball"
    on_all "mkdir -p ~/$REMOTE_DIR && tar -xzf ~/ifp_repo.tar.gz -C ~/$REMOTE_DIR && \
      cd ~/$REMOTE_DIR && \
      PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash launch/setup_env.sh && \
      .venv/bin/python -m pip install -q 'jax[tpu]==$JAX_VERSION' && \
      .venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_devices())'"
    if [ -n "${GCS_BUCKET:-}" ]; then
      on_all "sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT && \
        (mountpoint -q $MOUNT || gcsfuse --implicit-dirs $GCS_BUCKET $MOUNT)"
    fi
    ;;
  train)
    [ $# -gt 0 ] || { echo "usage: $0 train --config=... --workdir=SHARED_DIR [...]" >&2; exit 2; }
    on_all "IFP_DISTRIBUTED=1 .venv/bin/python -m launch.train$(quote_args "$@") \
      2>&1 | tee -a ~/ifp_train_\$(hostname).log"
    ;;
  run)
    on_all "$*"
    ;;
  delete)
    "${GCLOUD[@]}" delete "$TPU_NAME" "${COMMON[@]}" --quiet
    ;;
  *)
    echo "usage: $0 create|setup|train ARGS|run 'CMD'|delete   (see the header)" >&2
    exit 2
    ;;
esac
