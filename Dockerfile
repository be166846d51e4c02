# The km-hotfix worker image. Debian-based: the Temporal core bridge (a native
# Rust module) does not run on Alpine's musl.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# python3/make/g++ let ssh2 build its optional native crypto binding.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY . .
# `npm ci` runs `prepare` (tsc) after installing; then drop the dev dependencies.
RUN npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
USER node
# SIGTERM (docker stop) drains the worker, then closes its clients.
CMD ["node", "bin/km-hotfix.js", "worker"]
