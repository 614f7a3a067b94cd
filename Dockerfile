# syntax=docker/dockerfile:1
# elmo serve on the CPU: the HTTP JSON service of docs/serving.md.
#
#   docker build -t elmo-serve .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/my-model:/models/model:ro" \
#     -v "$PWD/keys.json:/run/secrets/keys.json:ro" \
#     -e ELMO_NUM_THREADS=4 elmo-serve
#
# Two stages: `build` has the toolchain (g++, make, python3 from node:20-bookworm; cmake added)
# and runs npm ci, the addon build (CPU only), tsc and a prune; the runtime stage is the slim
# Node image with dist/, the addon and the production node_modules, run as the unprivileged
# `node` user. Both stages are Debian 12 (bookworm), so the addon runs against the glibc and
# libstdc++ it was built with. The model directory and the API key file are mounted, not baked
# in (docs/install.md, "Docker").
ARG NODE_VERSION=20

# ---- build ---------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake ninja-build \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first (a layer that changes only with the lockfile). --ignore-scripts: the
# package's own install script needs the native sources, copied below; better-sqlite3's is
# run right after.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3

# The addon: scripts/install.js finds no prebuilt binary here (prebuilds/ is not copied) and
# builds build/Release/elmo.node with cmake-js; ELMO_CUDA=OFF: the CPU backend only.
COPY CMakeLists.txt ./
COPY native/ native/
COPY cuda/ cuda/
COPY bindings/ bindings/
COPY scripts/install.js scripts/
RUN ELMO_CUDA=OFF node scripts/install.js \
 && node -e "const i = require('./build/Release/elmo.node').buildInfo(); console.log(i.flags, i.compiler)"

# TypeScript to dist/, then only the production dependencies.
COPY tsconfig.json tsconfig.build.json ./
COPY lib/ lib/
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime -------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=root:root /src/package.json ./
COPY --from=build --chown=root:root /src/node_modules/ node_modules/
COPY --from=build --chown=root:root /src/dist/ dist/
COPY --from=build --chown=root:root /src/build/Release/elmo.node build/Release/elmo.node
# The code belongs to root and is read-only to the service, which runs as `node` (uid 1000).
USER node
EXPOSE 8080
# /healthz answers 200 while the process lives (no key needed); the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "require('http').get('http://127.0.0.1:8080/healthz', (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"]
# SIGTERM (docker stop) drains: /readyz turns 503, requests in flight finish, then exit;
# SIGHUP reloads the model (docs/serving.md). Exec form, so node gets the signals itself.
STOPSIGNAL SIGTERM
CMD ["node", "dist/cli.js", "serve", "--model", "/models/model", "--host", "0.0.0.0", "--port", "8080", "--keys", "/run/secrets/keys.json"]
