"""The build context follows ``.dockerignore`` the way the Docker CLI does."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest

from suite_contract.spec import find_repository_root
from suite_tools.context import context_files, context_tar

IGNORE = """\
# everything out, then back in what the images need
**
!pyproject.toml
!uv.lock
!shared/pyproject.toml
!shared/src/**
!services/*/pyproject.toml
!services/*/src/**
**/__pycache__
**/*.pyc
!infra/pyproject.toml
services/legacy
**/local_settings.py
"""

TREE = [
    "Dockerfile",
    "README.md",
    "pyproject.toml",
    "uv.lock",
    ".git/HEAD",
    ".venv/lib/site.py",
    "shared/pyproject.toml",
    "shared/src/servicekit/__init__.py",
    "shared/src/servicekit/__pycache__/__init__.cpython-311.pyc",
    "shared/src/servicekit/stale.pyc",
    "shared/tests/test_x.py",
    "services/api/pyproject.toml",
    "services/api/Dockerfile",
    "services/api/src/api/main.py",
    "services/api/src/api/deep/er/module.py",
    "services/api/tests/test_main.py",
    "services/legacy/pyproject.toml",
    "services/legacy/src/legacy/old.py",
    "infra/pyproject.toml",
    "infra/app.py",
]

EXPECTED = [
    ".dockerignore",
    "Dockerfile",
    "infra/pyproject.toml",
    "pyproject.toml",
    "services/api/pyproject.toml",
    "services/api/src/api/deep/er/module.py",
    "services/api/src/api/main.py",
    # `services/legacy` comes after `**` had already excluded the folder, so it is never tried
    # there and what the wildcards re-included below it stays: the CLI's rule, kept for parity.
    "services/legacy/pyproject.toml",
    "services/legacy/src/legacy/old.py",
    "shared/pyproject.toml",
    "shared/src/servicekit/__init__.py",
    "uv.lock",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for name in TREE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / ".dockerignore").write_text(IGNORE)
    return root


def test_last_matching_pattern_wins_and_wildcards_reach_into_excluded_folders(tree: Path) -> None:
    assert context_files(tree) == EXPECTED


def test_the_tar_holds_the_files_owned_by_root(tree: Path) -> None:
    with context_tar(tree) as archive, tarfile.open(fileobj=archive, mode="r:gz") as tar:
        members = tar.getmembers()
    assert sorted(member.name for member in members) == EXPECTED
    assert {(member.uid, member.gid) for member in members} == {(0, 0)}


def _docker_cli_context(root: Path, out: Path) -> list[str]:
    """What ``docker build`` itself sends, exported by a ``COPY . /`` build."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    try:
        docker.from_env().close()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine reachable ({error})")
    done = subprocess.run(
        ["docker", "build", "-q", "-f", "-", "--output", f"type=local,dest={out}", str(root)],
        input="FROM scratch\nCOPY . /\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"docker build --output (BuildKit/buildx) unavailable: {done.stderr.strip()}")
    return sorted(
        str(path.relative_to(out)) for path in out.rglob("*") if path.is_file() or path.is_symlink()
    )


BUILD_FILES = {"Dockerfile", ".dockerignore"}  # sent beside the context, whatever the patterns


def test_same_files_as_the_docker_cli_sends(tree: Path, tmp_path: Path) -> None:
    sent = _docker_cli_context(tree, tmp_path / "out")
    assert sorted(set(sent) - BUILD_FILES) == sorted(set(EXPECTED) - BUILD_FILES)


def test_same_files_as_the_docker_cli_sends_for_this_repository(tmp_path: Path) -> None:
    root = find_repository_root(Path(__file__).parent)
    sent = _docker_cli_context(root, tmp_path / "out")
    assert sorted(set(sent) - BUILD_FILES) == sorted(set(context_files(root)) - BUILD_FILES)
