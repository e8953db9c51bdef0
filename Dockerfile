# One recipe for every service's image (no per-service copies to drift apart):
#   docker build --build-arg SERVICE=api -t suite/api .
# docker compose and the push tool pass SERVICE; everything else comes from the service's package.
# PYTHON_IMAGE: any Debian-based image with python3; override it for a private registry or an
# ECR pull-through cache. The default is pinned by the digest of its multi-platform index (amd64
# and arm64 resolve from the same pin): a rebuilt tag cannot change the image unnoticed. Bump
# both parts together; the digest is `docker buildx imagetools inspect <name:tag>`'s first line.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm@sha256:0f5b26b9518d002b6173fd61daad821fa340635ebfec5bba471013f9ca114579

# Only the workspace manifests: the dependency layer below is rebuilt when they change, not
# when source does.
FROM ${PYTHON_IMAGE} AS manifests
COPY . /src
RUN find /src -type f ! -name pyproject.toml ! -name uv.lock -delete

FROM ${PYTHON_IMAGE} AS db-ca
# The RDS CA bundle (DATABASE__SSLROOTCERT=/etc/ssl/certs/rds-global-bundle.pem in AWS), fetched
# when both are given and refused unless its sha256 is the pinned one. Without them (machines
# that reach no AWS endpoint, local compose) the image has no bundle. The workflow passes both.
ARG DB_CA_BUNDLE_URL=""
ARG DB_CA_BUNDLE_SHA256=""
RUN mkdir -p /out/certs && if [ -n "${DB_CA_BUNDLE_URL}${DB_CA_BUNDLE_SHA256}" ]; then \
        { [ -n "${DB_CA_BUNDLE_URL}" ] && [ -n "${DB_CA_BUNDLE_SHA256}" ]; } \
        || { echo "DB_CA_BUNDLE_URL and DB_CA_BUNDLE_SHA256 go together" >&2; exit 1; }; \
        python3 -c 'import shutil, sys, urllib.request; \
shutil.copyfileobj(urllib.request.urlopen(sys.argv[1], timeout=30), sys.stdout.buffer)' \
            "${DB_CA_BUNDLE_URL}" >/out/certs/rds-global-bundle.pem \
        && echo "${DB_CA_BUNDLE_SHA256}  /out/certs/rds-global-bundle.pem" >/tmp/ca.sha256 \
        && sha256sum --check --strict /tmp/ca.sha256; \
    fi

FROM ${PYTHON_IMAGE} AS build
# strip, for the dependencies' extension modules below. Before ARG SERVICE: one layer for every
# service's build. Debian's current binutils: a build tool, nothing of it reaches the image.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
ARG SERVICE
# uv, pinned by version and by the sha256 of its wheels for Linux on x86_64 (manylinux_2_17) and
# aarch64 (manylinux_2_28, and _2_17 for older glibc): pip installs no other file. To bump, for
# each platform: pip download uv==<version> --no-deps --only-binary=:all: --platform <tag>;
# sha256sum. The workflow's UV_VERSION names the same version.
ARG UV_VERSION=0.13.9
ARG UV_HASHES="--hash=sha256:d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19 \
--hash=sha256:ecb6028d79dc96fbeafffe5c8af62a7099487ebc05a701e76714eebcffd06375 \
--hash=sha256:5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_FROZEN=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 UV_PROJECT_ENVIRONMENT=/app/.venv
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }
RUN python3 -m venv /opt/uv \
    && echo "uv==${UV_VERSION} ${UV_HASHES}" >/tmp/uv-requirements.txt \
    && /opt/uv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r /tmp/uv-requirements.txt
WORKDIR /src
COPY --from=manifests /src /src
# Some wheels ship their extension modules with debug information (uvloop's is 13.6 MB, 1.6 MB
# without; httptools', wrapt's), and cryptography's with its symbol table: stripped, the api's
# image is about 15 MB smaller. What Python loads (the dynamic symbols) stays.
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --no-dev --package "${SERVICE}" --no-install-workspace \
    && find /app/.venv -name '*.so' -exec strip --strip-unneeded {} +
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --no-dev --package "${SERVICE}" --no-editable \
    && ln -s "/app/.venv/bin/${SERVICE}" /app/.venv/bin/service

# The runtime: the base image, the virtual environment, a non-root user. No compiler, no uv,
# no source tree; works with a read-only root filesystem (mount a tmpfs on /tmp).
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
ENV PATH=/app/.venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONFAULTHANDLER=1 \
    SERVICE_NAME=${SERVICE}
COPY --from=build /app/.venv /app/.venv
COPY --from=db-ca /out/certs/ /etc/ssl/certs/
WORKDIR /tmp
USER 10001:10001
# The service's own /health on its own port (PORT and HEALTH_PATH from the environment; the task
# definition passes both as arguments): image/healthcheck, bash alone, no curl in the image.
COPY --chmod=0755 image/healthcheck /usr/local/bin/healthcheck
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["healthcheck"]
# Exec form: the service is PID 1 and receives SIGTERM itself. `service` is the console script
# named after the service (the spec's `command` overrides it, e.g. `scheduler serve`).
CMD ["service"]
