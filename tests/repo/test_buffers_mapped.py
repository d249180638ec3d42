"""Which allocator setting a backup runs under (pure logic: mallopt's calls are recorded,
the repositories are stand-ins naming their storage)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lifeboat import memory
from lifeboat.repo.backup import PACK_BUFFERS_MAPPED, packs_mapped


@pytest.fixture
def mallopt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: calls.append((param, value)))
    return calls


def repo_on(url: str) -> SimpleNamespace:
    return SimpleNamespace(storage=SimpleNamespace(url=url))


def test_an_inner_block_gives_the_outer_its_threshold_back(mallopt_calls):
    with memory.large_buffers_mapped(4 << 20):
        with memory.large_buffers_mapped(256 << 10):
            assert mallopt_calls[-1] == (memory.M_MMAP_THRESHOLD, 256 << 10)
        assert mallopt_calls[-1] == (memory.M_MMAP_THRESHOLD, 4 << 20)
    assert mallopt_calls[-2:] == [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 64 << 20)]


def test_a_block_left_by_an_exception_still_restores_the_setting(mallopt_calls):
    with pytest.raises(RuntimeError), memory.large_buffers_mapped(4 << 20):
        raise RuntimeError("backup failed")
    assert mallopt_calls[-2:] == [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 64 << 20)]
    with memory.large_buffers_mapped(1 << 20):
        pass
    assert mallopt_calls[-3] == (memory.M_MMAP_THRESHOLD, 1 << 20)  # nothing left over from the first


def test_packs_are_mapped_for_a_remote_repository_only(mallopt_calls):
    with packs_mapped(repo_on("s3://bucket/repo")):  # type: ignore[arg-type]
        assert mallopt_calls == [(memory.M_MMAP_THRESHOLD, PACK_BUFFERS_MAPPED)]
    mallopt_calls.clear()
    with packs_mapped(repo_on("file:///srv/repo")):  # type: ignore[arg-type]
        pass
    assert mallopt_calls == []


def test_blocks_left_out_of_order_keep_the_lowest_open_threshold(mallopt_calls):
    """Two threads' blocks need not end in the order they began."""
    first, second = memory.large_buffers_mapped(1 << 20), memory.large_buffers_mapped(4 << 20)
    first.__enter__()
    second.__enter__()
    assert mallopt_calls[-1] == (memory.M_MMAP_THRESHOLD, 1 << 20)  # the lowest of the open ones
    first.__exit__(None, None, None)
    assert mallopt_calls[-1] == (memory.M_MMAP_THRESHOLD, 4 << 20)
    second.__exit__(None, None, None)
    assert mallopt_calls[-2:] == [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 64 << 20)]
