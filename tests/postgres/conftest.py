from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pgsandbox import PgSandbox, destroy, make_sandbox


@pytest.fixture
def pg() -> Iterator[PgSandbox]:
    sandbox = make_sandbox()
    yield sandbox
    destroy(sandbox)
