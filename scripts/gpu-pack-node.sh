#!/usr/bin/env bash
# Packs what a GPU machine without Node needs for the Node smoke run of scripts/gpu-check.sh:
# .node/node.xz (this machine's node binary) and .node/elmo.node.xz (the addon as built here,
# with the CUDA backend when nvcc was found), both xz-compressed (about 24 MB and 4 MB), next
# to dist/ (npm run build). .node/ and dist/ are ignored by git: copy them along with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/Release/elmo.node ] || { echo "build/Release/elmo.node is missing: npm run build:addon" >&2; exit 1; }
[ -d dist ] || { echo "dist/ is missing: npm run build" >&2; exit 1; }
mkdir -p .node
xz -T0 -6 -c "$(command -v node)" >.node/node.xz.tmp && mv .node/node.xz.tmp .node/node.xz
xz -T0 -6 -c build/Release/elmo.node >.node/elmo.node.xz.tmp && mv .node/elmo.node.xz.tmp .node/elmo.node.xz
ls -l .node/node.xz .node/elmo.node.xz
