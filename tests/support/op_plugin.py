"""pytest plugin: one real OpenID Provider (tests/op/server.js) for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.op import TestOP

__all__ = ["op_fixture"]


# name="op" with a different function name: test modules can import it without ruff's F811 on `op` args.
@pytest.fixture(scope="session", name="op")
def op_fixture() -> Iterator[TestOP]:
    """The running test OP; call ``op.reset_stats()`` before asserting on ``op.stats()``."""
    server = TestOP()
    server.start()
    try:
        yield server
    finally:
        server.stop()
