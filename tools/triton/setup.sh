#!/usr/bin/env bash
# Install a real tritonserver (2.51.0, CPU, with the Python backend) from the nvidia-pytriton wheel.
#
# The wheel carries tritonserver, its bundled libraries (nvidia_pytriton.libs, found through
# the binaries' RPATH) and the Python backend with one stub per Python version. pip downloads the
# wheel (--no-deps, about 55 MB) into a cache outside the checkout; the server, its libraries and
# the backend are unpacked there (about 145 MB) and the 3.11 stub is put beside the backend. The
# stub embeds Debian's libpython3.11 and imports Debian's python3-numpy (`make debs` installs
# both): run it with the venv's libpython or numpy and it fails with "output tensor shape does
# not match". Reused while its stamp matches this script's pin.
#
#   TRIMTAB_TRITON_CACHE  the cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/triton);
#   the server is $CACHE/server-2.51.0/pytriton/tritonserver/bin/tritonserver, the last line
#   of stdout. tests/support/triton_real.py starts it (keep the two in step).
set -euo pipefail

CACHE=${TRIMTAB_TRITON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/triton}
PIN="nvidia-pytriton==0.5.14"
VERSION=2.51.0
DEST=$CACHE/server-$VERSION
SERVER=$DEST/pytriton/tritonserver
STAMP=$DEST/.stamp-trimtab
PYTHON=${PYTHON:-python3.11}

log() { echo "triton-setup: $*" >&2; }

if [ "$(cat "$STAMP" 2>/dev/null)" != "$PIN" ]; then
    log "downloading $PIN and unpacking tritonserver $VERSION into $DEST"
    mkdir -p "$CACHE/wheels"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest "$CACHE/wheels" "$PIN" >&2
    wheel=$(ls "$CACHE"/wheels/nvidia_pytriton-"${PIN#*==}"-*.whl | head -1)
    rm -rf "$DEST" "$DEST.tmp"
    mkdir -p "$DEST.tmp"
    "$PYTHON" -m zipfile -e "$wheel" "$DEST.tmp/all" >&2
    mv "$DEST.tmp/all/pytriton" "$DEST.tmp/all/nvidia_pytriton.libs" "$DEST.tmp/"
    rm -rf "$DEST.tmp/all"
    # zipfile keeps no modes: the binaries need theirs back
    chmod +x "$DEST.tmp/pytriton/tritonserver/bin/tritonserver" \
        "$DEST.tmp"/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
    # Only the .py sources of pytriton are not needed; the server tree is kept whole.
    find "$DEST.tmp/pytriton" -maxdepth 1 -mindepth 1 ! -name tritonserver -exec rm -rf {} +
    cp "$DEST.tmp/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
        "$DEST.tmp/pytriton/tritonserver/backends/python/"
    mv "$DEST.tmp" "$DEST"
    # --help exits 1, but only after every library was found and loaded
    usage=$("$SERVER/bin/tritonserver" --help 2>&1 || true)
    [[ $usage == "Usage: tritonserver"* ]] || {
        log "tritonserver does not run:"; ldd "$SERVER/bin/tritonserver" >&2; exit 1; }
    echo "$PIN" > "$STAMP"
fi

[ -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ] && /usr/bin/python3.11 -c "import numpy" 2>/dev/null || {
    log "Debian's libpython3.11 and python3-numpy are missing: run \`make debs\`"; exit 1; }
echo "$SERVER/bin/tritonserver"
