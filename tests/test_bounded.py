"""``map_ahead`` (lifeboat/bounded.py): the results of ``Executor.map`` in order, with at most
``ahead`` items taken before they are handed out (check --read-data's memory depends on it)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from lifeboat.bounded import map_ahead


def counted(taken: list[int]) -> Iterator[int]:
    """0..99, each noted in ``taken`` as it is taken."""
    for i in range(100):
        taken.append(i)
        yield i


def test_results_in_order_with_at_most_ahead_items_taken_before_the_first() -> None:
    taken: list[int] = []

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = map_ahead(pool, lambda x: 2 * x, counted(taken), 4)
        assert next(results) == 0
        assert len(taken) == 4  # Executor.map takes all 100 first
        assert list(results) == [2 * i for i in range(1, 100)]


def test_an_error_is_raised_in_its_place_and_no_item_after_the_window_is_taken() -> None:
    taken: list[int] = []

    def fail_at_three(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = map_ahead(pool, fail_at_three, counted(taken), 4)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="three"):
            next(results)
        assert len(taken) == 7
