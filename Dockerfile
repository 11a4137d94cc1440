# syntax=docker/dockerfile:1
# static-egress: one image for the controller, the node agent (and the CNI plugin it installs
# on the host) and the gateway agent. See docs/deploy.md.
#
#   docker build -t registry.example.com/static-egress:0.1.0 .

# --- the CNI shim: Go, standard library only, static (cni-shim/go.mod pins the toolchain) --------
FROM golang:1.26.8-bookworm AS cni-shim
WORKDIR /src
COPY cni-shim ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o static-egress-shim .

# --- build: compile TypeScript, then keep only the runtime dependencies ----------------------
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm run build` bundles the CLI's entry into one file after tsc (scripts/bundle.ts).
COPY scripts/bundle.ts ./scripts/
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund
# `static-egress cni install` takes the shim from dist/cni/ (docs/cni.md).
COPY --from=cni-shim /src/static-egress-shim ./dist/cni/static-egress-shim
# BUILD_ID, a content hash of what ships: the node agent's init container installs the CNI
# plugin on the host under /opt/static-egress/releases/<BUILD_ID>.
RUN find dist node_modules package.json -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16 > BUILD_ID

# --- runtime --------------------------------------------------------------------------------
FROM node:24-bookworm-slim
# What the agents exec (src/dataplane, src/cni): nft (nftables), ip (iproute2),
# conntrack (conntrack), sysctl (procps). iptables is not used.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nftables iproute2 conntrack procps \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json /src/BUILD_ID ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Node's compile cache of the bundled CLI, written now by this image's Node.js so that a new node's
# agent does not compile it again; per uid as Node keys it (root: the node agent; 1000: the
# controller, the gateway agent). Read-only at run time. scripts/build-image.sh does the same.
ENV NODE_COMPILE_CACHE=/app/.compile-cache NODE_COMPILE_CACHE_PORTABLE=1
RUN mkdir -m 0755 .compile-cache \
 && node dist/cli/main.js agent node --help >/dev/null \
 && chown 1000:1000 .compile-cache \
 && setpriv --reuid=1000 --regid=1000 --clear-groups node dist/cli/main.js agent node --help >/dev/null \
 && chown 0:0 .compile-cache
# Non-root by default (the image's `node` user, numeric so runAsNonRoot can check it); the
# node agent's DaemonSet runs as root with NET_ADMIN only.
USER 1000:1000
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
