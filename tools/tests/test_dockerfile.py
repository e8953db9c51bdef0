"""The root Dockerfile's RDS CA bundle stage, built for real: the bundle only with its pinned
sha256, nothing without the build arguments, a clear refusal otherwise."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from suite_contract.spec import find_repository_root
from suite_tools.testing import BASE_IMAGE

ROOT = find_repository_root(Path(__file__).parent)
BUNDLE = b"-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n"

# The engine and the base image, or a skip saying which is missing.
pytestmark = pytest.mark.usefixtures("docker_client")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def bundle_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in bundle over HTTP on loopback (the build joins the host's network)."""
    folder = tmp_path_factory.mktemp("truststore")
    (folder / "global-bundle.pem").write_bytes(BUNDLE)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/global-bundle.pem"
    server.shutdown()
    thread.join()
    server.server_close()


# Every file of /out/certs, as JSON {name: hex of its bytes}.
_READ_CERTS = (
    "import json, pathlib; "
    "print(json.dumps({p.name: p.read_bytes().hex() "
    "for p in pathlib.Path('/out/certs').iterdir()}))"
)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    # Under pytest-timeout: a stuck engine fails here, naming the command.
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=240
    )


@dataclass(frozen=True)
class Built:
    build: subprocess.CompletedProcess[str]
    certs: dict[str, bytes]  # /out/certs of the stage: what the runtime image gets


def _build_ca_stage(tmp_path: Path, url: str | None = None, pin_of: bytes | None = None) -> Built:
    """Build the Dockerfile's db-ca stage with the build arguments given (the pinned sha256 is
    that of ``pin_of``), and read what it leaves in /out/certs."""
    args = {
        "DB_CA_BUNDLE_URL": url,
        "DB_CA_BUNDLE_SHA256": pin_of and hashlib.sha256(pin_of).hexdigest(),
    }
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(ROOT / "Dockerfile", context / "Dockerfile")
    tag = f"suite-test/db-ca:{uuid.uuid4().hex[:12]}"
    build = _docker(
        "build",
        "--network=host",
        "--target=db-ca",
        f"--tag={tag}",
        f"--build-arg=PYTHON_IMAGE={BASE_IMAGE}",
        *(f"--build-arg={key}={value}" for key, value in args.items() if value),
        str(context),
    )
    if build.returncode:
        return Built(build, {})
    try:
        listing = _docker("run", "--rm", tag, "python3", "-c", _READ_CERTS)
        assert listing.returncode == 0, listing.stderr
        found = json.loads(listing.stdout)
    finally:
        _docker("rmi", tag)
    return Built(build, {name: bytes.fromhex(content) for name, content in found.items()})


def test_the_bundle_with_its_sha256_is_in_the_image(bundle_url: str, tmp_path: Path) -> None:
    built = _build_ca_stage(tmp_path, bundle_url, pin_of=BUNDLE)
    assert built.build.returncode == 0, built.build.stderr
    assert built.certs == {"rds-global-bundle.pem": BUNDLE}


def test_another_sha256_fails_the_build(bundle_url: str, tmp_path: Path) -> None:
    built = _build_ca_stage(tmp_path, bundle_url, pin_of=b"another bundle")
    assert built.build.returncode != 0
    assert "rds-global-bundle.pem: FAILED" in built.build.stderr


def test_a_url_without_its_sha256_is_refused(bundle_url: str, tmp_path: Path) -> None:
    built = _build_ca_stage(tmp_path, bundle_url)
    assert built.build.returncode != 0
    assert "DB_CA_BUNDLE_URL and DB_CA_BUNDLE_SHA256 go together" in built.build.stderr


def test_without_the_arguments_there_is_no_bundle(tmp_path: Path) -> None:
    built = _build_ca_stage(tmp_path)
    assert built.build.returncode == 0, built.build.stderr
    assert built.certs == {}
