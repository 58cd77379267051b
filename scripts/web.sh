#!/usr/bin/env bash
# web.sh: builds the browser console (web/) and installs what its browser test needs.
#
# usage:
#   scripts/web.sh build      npm ci (when web/node_modules is missing or older than package-lock.json),
#                             generate web/src/gen from rpc/dict/v1 (buf, web/buf.gen.yaml, protoc-gen-es from
#                             web/node_modules), type-check and bundle (Vite) into web/dist/console, which the
#                             Go package web embeds: rebuild the binary afterwards (`make web build` does both).
#   scripts/web.sh chromium   install Debian's Chromium (/usr/bin/chromium) for the browser test, when missing.
#
# Needs node >= 20.19 and npm (web/package.json); Chromium comes from apt (root, or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  command -v node >/dev/null || { echo "web.sh: node is not installed (need >= 20.19)" >&2; exit 1; }
  if [[ ! -f web/node_modules/.package-lock.json || web/package-lock.json -nt web/node_modules/.package-lock.json ]]; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
  fi
  go tool -modfile=tools/go.mod buf generate --template web/buf.gen.yaml
  (cd web && node_modules/.bin/tsc --noEmit && node_modules/.bin/vite build --logLevel warn)
  touch web/dist/console/index.html
}

chromium() {
  if [[ -x /usr/bin/chromium ]]; then
    return
  fi
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    sudo=(sudo)
  fi
  echo "web.sh: installing Debian's chromium for the console's browser test" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

case "${1:-}" in
  build) build ;;
  chromium) chromium ;;
  *) echo "usage: scripts/web.sh build|chromium" >&2; exit 2 ;;
esac
