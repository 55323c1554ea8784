"""Fixtures shared by the integration and reliability suites, so each starts once a session."""

from tests.stores import shared_stores  # noqa: F401  (a session fixture)
