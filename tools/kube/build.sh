#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from Debian's kubernetes source, once a machine.
#
# No prebuilt kube-apiserver exists in Debian, PyPI or npm, so the tests build one: Debian's
# `kubernetes` source package (1.20.5+really1.20.2, vendor/ included) with Debian's golang-go
# through Kubernetes' own `make WHAT=...` (plain `go build` lacks the generated openapi code).
# The binaries go to a cache outside the checkout and are reused while they run (`--version`).
#
#   TRIMTAB_KUBE_CACHE  the cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/kube-1.20.2);
#   the bin directory is printed as the last line of stdout.
set -euo pipefail

CACHE=${TRIMTAB_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trimtab/kube-1.20.2}
BIN=$CACHE/bin
TOOLS=(kube-apiserver kube-controller-manager)
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

log() { echo "kube-build: $*" >&2; }

built() {
    local t
    for t in "${TOOLS[@]}"; do
        "$BIN/$t" --version >/dev/null 2>&1 || return 1
    done
}

# Debian packages: etcd for the tests, the toolchain and reflect2 1.0.2 for the build.
install_debs() {
    local want=() p
    for p in etcd-server golang-go rsync golang-github-modern-go-reflect2-dev build-essential \
             dpkg-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || want+=("$p")
    done
    if [ "${#want[@]}" -gt 0 ]; then
        log "installing Debian packages: ${want[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            "${want[@]}" >/dev/null
    fi
}

# One deb-src line per deb entry of this release that the system's apt already uses
# (its own mirror, its own keyring), written to a private list: the system's stays untouched.
private_sources() {
    python3 - "$1" <<'PY'
import glob, re, sys

codename = ""
with open("/etc/os-release") as f:
    for line in f:
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
if not codename:
    sys.exit("kube-build: /etc/os-release has no VERSION_CODENAME")

entries = []  # (options, uri, suite, components)
for path in sorted(glob.glob("/etc/apt/sources.list")
                   + glob.glob("/etc/apt/sources.list.d/*.list")):
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        m = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
        if m:
            opts = (m.group(1) or "").strip()[1:-1].strip()
            entries.append((opts, m.group(2), m.group(3), m.group(4).split()))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        key = fields.get("signed-by", "")
        opts = f"signed-by={key}" if key.startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append((opts, uri, suite, fields.get("components", "main").split()))

lines = []
for opts, uri, suite, comps in entries:
    if suite == codename or suite.startswith(codename + "-"):
        lines.append(f"deb-src {'[' + opts + '] ' if opts else ''}{uri} {suite} {' '.join(comps)}")
if not lines:
    sys.exit(f"kube-build: no deb entry for {codename} in /etc/apt/sources.list(.d)")
with open(sys.argv[1], "w") as f:
    f.write("\n".join(dict.fromkeys(lines)) + "\n")
PY
}

fetch_source() {
    local work=$CACHE/src apt=$CACHE/apt
    rm -rf "$work" "$apt"
    mkdir -p "$work" "$apt/lists/partial" "$apt/parts"
    private_sources "$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
                -o "Dir::State::Lists=$apt/lists")
    # The private lists live in our cache, which apt's unprivileged _apt user cannot enter.
    [ "$(id -u)" = 0 ] && opts+=(-o "APT::Sandbox::User=root")
    log "fetching Debian's kubernetes source"
    apt-get "${opts[@]}" update -qq
    (cd "$work" && apt-get "${opts[@]}" source --download-only -qq kubernetes)
    (cd "$work" && dpkg-source -x --no-check ./kubernetes_*.dsc tree >/dev/null)
    local ver
    ver=$(sed -n 's/^Version: //p' "$work"/kubernetes_*.dsc)
    case "$ver" in
        *really1.20.2*) log "source version $ver" ;;
        *) log "unexpected kubernetes source version '$ver' (want 1.20.5+really1.20.2)"; exit 1 ;;
    esac
}

# reflect2 1.0.1 (vendored) breaks on Go 1.18 and later: take Debian's 1.0.2 files instead.
patch_reflect2() {
    local vendored=$CACHE/src/tree/vendor/github.com/modern-go/reflect2
    local debian=/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -d "$debian" ] || { log "$debian missing (golang-github-modern-go-reflect2-dev)"; exit 1; }
    rm -f "$vendored"/*.go "$vendored"/*.s
    cp "$debian"/*.go "$vendored"/
    rm -f "$vendored"/*_test.go
}

build() {
    local tree=$CACHE/src/tree
    log "building ${TOOLS[*]} (nice 19; about 15 minutes on two cores)"
    (
        cd "$tree"
        # GOPATH mode: vendor/ is used through the GOPATH that Kubernetes' make sets up.
        export GO111MODULE=off GOPROXY=off GOCACHE=$CACHE/gocache
        export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
        nice -n 19 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager"
    )
    mkdir -p "$BIN.new"
    local t
    for t in "${TOOLS[@]}"; do
        cp "$tree/_output/local/bin/linux/$(go env GOARCH)/$t" "$BIN.new/$t"
    done
    rm -rf "$BIN"
    mv "$BIN.new" "$BIN"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # a second `make kube` waits for the first instead of building again
if built; then
    install_debs  # etcd-server is needed to run the tests even with cached binaries
    log "cached: $BIN"
else
    install_debs
    start=$(date +%s)
    fetch_source
    patch_reflect2
    build
    built || { log "built binaries do not run"; exit 1; }
    log "built in $(( $(date +%s) - start )) s"
    rm -rf "$CACHE/src" "$CACHE/apt" "$CACHE/gocache"  # keep the binaries only
fi
"$BIN/kube-apiserver" --version >&2
echo "$BIN"
