"""Write conda.yaml, the environment of `mlflow run .`, from the locked requirements/batch.txt.

`make lock` runs it after compiling the locks; tests/unit/test_project_files.py checks that
conda.yaml and batch.txt agree.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The newest 3.11 patch release with an official python:3.11.N-slim-bookworm image: the images'
# default base names the same release (Dockerfile, docker-compose.yml; a unit test checks).
PYTHON = "3.11.17"
HEADER = """\
# The environment for `mlflow run .`, every entry point: the locked pins of
# requirements/batch.txt (training.in and Spark, with every indirect dependency), written by
# `make lock` (a unit test checks they agree). Python is pinned so virtualenv works offline.
"""


def locked(path: Path) -> list[str]:
    """The ``name==version`` lines of a compiled requirements file, in its order."""
    found = []
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*==[^\s;#]+)", line)
        if match:
            found.append(match.group(1))
    return found


def render(pins: list[str]) -> str:
    lines = [
        "name: sentiment-mlops-service",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
        *(f"      - {pin}" for pin in pins),
    ]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "conda.yaml").write_text(render(locked(ROOT / "requirements" / "batch.txt")))
