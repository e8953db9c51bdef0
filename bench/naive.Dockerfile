# The naive image bench/images.py measures the suite's images against: what a first Dockerfile
# looks like. One stage, the whole build context copied in, `pip install` of the service's
# workspace packages (no lock file, no uv), pip itself left in the image.
#   docker build -f bench/naive.Dockerfile --build-arg SERVICE=api .
# pip's download cache is a BuildKit cache mount only so that reruns need no downloads; it is not
# in the image, so this naive image is, if anything, smaller than one with the cache left in.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG SERVICE
COPY . /src
# A virtual environment: Debian's own python3 refuses a system-wide pip install (PEP 668).
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /venv && /venv/bin/pip install /src/shared /src/jobs "/src/services/${SERVICE}"
ENV PATH=/venv/bin:${PATH}
