"""The service specs: the seed's figures, and clear errors for a bad spec."""

from pathlib import Path

import pytest

from servicekit.spec import Exposure, find_repository_root, load_spec, load_specs

ROOT = find_repository_root(Path(__file__).parent)


def test_the_seed_figures() -> None:
    specs = load_specs(ROOT)
    figures = {
        name: (s.task.desired_count, s.task.cpu, s.task.memory, s.exposure, s.trigger.kind)
        for name, s in specs.items()
    }
    assert figures == {
        "api": (3, 512, 1024, Exposure.EXTERNAL, "http"),
        "worker": (2, 1024, 2048, Exposure.INTERNAL, "sqs"),
        "scheduler": (1, 256, 512, Exposure.NONE, "schedule"),
    }
    assert specs["api"].health_path == "/health"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("memory = 4096\n", "does not fit cpu 256"),
        ("cpu = 300\n", "is not a Fargate size"),
        ("bogus = 1\n", "bogus"),
    ],
)
def test_a_bad_spec_names_the_file_and_the_problem(
    tmp_path: Path, change: str, message: str
) -> None:
    text = (ROOT / "services/scheduler/service.toml").read_text()
    key = change.split(" = ", maxsplit=1)[0]
    lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
    index = lines.index("[task]") + 1
    lines.insert(index, change.rstrip())
    path = tmp_path / "service.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message) as raised:
        load_spec(path)
    assert str(path) in str(raised.value)
