#!/usr/bin/env bash
# What the delivery tools' tests need from Debian beyond a Docker engine (.ci/docker-setup):
# a real OCI registry (the CNCF distribution registry), htpasswd to give it the password ECR
# issues, and shellcheck for the workflow's scripts. Idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v shellcheck >/dev/null || need+=(shellcheck)
if ((${#need[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
