"""The API's OpenAPI document holds against the running suite: the document is what teams generate
clients from, so it must say what the server does, and the server do what it says.

Two independent users of the document, against the composed suite (``suite``,
tests/compose_suite.py) with a token from its issuer: schemathesis, every check and every phase
(stateful included, which follows the document's links), and a client generated from the served
document into a temporary directory, which creates, reads and lists jobs the way the links say.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from compose_suite import Suite

pytestmark = pytest.mark.timeout(900)

# Per operation and phase: enough to find what the issue found (a few hundred cases in all),
# little enough for `make test` (about 30 s on 2 cores).
MAX_EXAMPLES = 100


def test_schemathesis_finds_no_difference_between_the_document_and_the_server(
    suite: Suite, tmp_path: Path
) -> None:
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run",
            f"{suite.api.base_url}/openapi.json",
            "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(MAX_EXAMPLES),
            "--request-timeout", "10",
            "--header", f"Authorization: Bearer {suite.token('contract')}",
            "--report", "junit", "--report-dir", str(tmp_path),
        ],
        cwd=tmp_path,  # its cache (.schemathesis/) goes there too
        env=os.environ | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )  # fmt: skip
    print(f"schemathesis: {time.monotonic() - started:.1f} s")
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    assert "Stateful" in summary, summary  # the phase ran: the document's links were followed


def _generated_models(document: dict[str, Any], directory: Path) -> ModuleType:
    """pydantic models generated from ``document`` by datamodel-code-generator, imported."""
    source, target = directory / "openapi.json", directory / "jobs_api_models.py"
    source.write_text(json.dumps(document))
    subprocess.run(
        [
            sys.executable, "-m", "datamodel_code_generator",
            "--input", str(source), "--input-file-type", "openapi",
            "--output", str(target), "--output-model-type", "pydantic_v2.BaseModel",
            "--target-python-version", "3.11",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location(target.stem, target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[target.stem] = module  # pydantic resolves the models' forward references here
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[target.stem]
    return module


def _resolve(expression: str, body: Any) -> Any:
    """A link's ``$response.body#/json/pointer`` against the response body."""
    prefix = "$response.body#"
    assert expression.startswith(prefix), expression
    for part in expression.removeprefix(prefix).strip("/").split("/"):
        body = body[int(part)] if isinstance(body, list) else body[part]
    return body


def test_a_client_generated_from_the_document_creates_reads_and_lists_jobs(
    suite: Suite, tmp_path: Path
) -> None:
    document = suite.api.get("/openapi.json").json()
    models = _generated_models(document, tmp_path)
    operations = {
        operation["operationId"]: (method.upper(), path, operation)
        for path, by_method in document["paths"].items()
        for method, operation in by_method.items()
    }
    headers = {"Authorization": f"Bearer {suite.token('generated-client')}"}

    method, path, create = operations["create_job"]
    # The request body is the document's union of job types, discriminated by type.
    body = models.JobCreate(
        models.EchoJob(type="echo", payload=models.EchoPayload({"from": "a generated client"}))
    )
    response = suite.api.request(
        method,
        path,
        content=body.model_dump_json(exclude_none=True),
        headers=headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    created = models.Job.model_validate_json(response.content)

    # To the job, by the link the document gives from the 201.
    link = create["responses"]["201"]["links"]["GetJob"]
    method, path, _ = operations[link["operationId"]]
    arguments = {
        name: _resolve(value, response.json()) for name, value in link["parameters"].items()
    }
    read = suite.api.request(method, path.format(**arguments), headers=headers)
    assert read.status_code == 200, read.text
    assert models.Job.model_validate_json(read.content).id == created.id

    # Page by page, one job a page, by the NextPage link, until the created job comes.
    method, path, listing = operations["list_jobs"]
    link = listing["responses"]["200"]["links"]["NextPage"]
    assert operations[link["operationId"]][1] == path
    params: dict[str, Any] = {"limit": 1}
    seen: list[Any] = []
    for _ in range(20):
        page_response = suite.api.request(method, path, params=params, headers=headers)
        assert page_response.status_code == 200, page_response.text
        page = models.JobPage.model_validate_json(page_response.content)
        seen += [job.id for job in page.items]
        if created.id in seen or page.next_cursor is None:
            break
        params |= {
            name: _resolve(value, page_response.json())
            for name, value in link["parameters"].items()
        }
    assert created.id in seen
