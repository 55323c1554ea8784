"""What every suite shares: its marker, taken from its folder, and the session's stores.

`make test-unit` runs `tests/unit` (`-m unit`), `make test` every suite but the soak runs and
the Compose stack, `make test-compose` `tests/compose`.
"""

from pathlib import Path

import pytest

from tests.stores import shared_stores  # noqa: F401  (a session fixture)

HERE = Path(__file__).parent
# The folder a test lives in says what it needs; its marker says the same to `-m`.
SUITES = {"unit", "integration", "reliability", "compose"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = item.path.relative_to(HERE).parts[0]
        if suite in SUITES:
            item.add_marker(suite)
