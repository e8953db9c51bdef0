# One recipe for every service's image (no per-service copies to drift apart):
#   docker build --build-arg SERVICE=api -t suite/api .
# docker compose and the push tool pass SERVICE; everything else comes from the service's package.
# PYTHON_IMAGE: any Debian-based image with python3; override it for a private registry or an
# ECR pull-through cache.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Only the workspace manifests: the dependency layer below is rebuilt when they change, not
# when source does.
FROM ${PYTHON_IMAGE} AS manifests
COPY . /src
RUN find /src -type f ! -name pyproject.toml ! -name uv.lock -delete

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_FROZEN=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 UV_PROJECT_ENVIRONMENT=/app/.venv
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY --from=manifests /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --no-dev --package "${SERVICE}" --no-install-workspace
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
WORKDIR /tmp
USER 10001:10001
# The service's own /health on its own port (PORT and HEALTH_PATH from the environment), with
# the interpreter that is already there: no curl in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-m", "servicekit.healthcheck"]
# Exec form: the service is PID 1 and receives SIGTERM itself. `service` is the console script
# named after the service (the spec's `command` overrides it, e.g. `scheduler serve`).
CMD ["service"]
