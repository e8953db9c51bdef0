#!/usr/bin/env bash
# checkov over synthesized templates: infra/scripts/checkov.sh [cdk.out directory ...]
# checkov pins an old boto3, so it runs in its own environment (uvx), never in the workspace's.
# --skip-download: no calls to Prisma Cloud; the policies ship with the package, so this runs
# offline once uv has cached the wheel. Exit status 1 on any failed check.
set -euo pipefail
(($#)) || set -- "$(dirname "$0")/../cdk.out"
directories=()
for dir in "$@"; do directories+=(--directory "$dir"); done
exec uvx --quiet --from 'checkov==3.3.30' checkov --skip-download --quiet --compact \
    --framework cloudformation "${directories[@]}" --output cli
