"""The column-wise check of an index file's blob entries refuses exactly what the
entry-by-entry check refuses: a cached or stored index with one malformed entry among
thousands is never loaded (a reader would trust its offsets and types)."""

from __future__ import annotations

import pytest

from lifeboat.errors import IntegrityError
from lifeboat.repo.format import MAX_BLOB_SIZE, MAX_STORED_BLOB, blob_entries_valid, check_blob_entry

GOOD = ["ab" * 32, "data", 7, 100, 90]

MALFORMED: list[object] = [
    ("AB" * 32, "data", 7, 100, 90),  # uppercase id
    ("ab" * 31, "data", 7, 100, 90),  # short id
    ("ab" * 32 + "a", "data", 7, 100, 90),  # long id
    ("zz" * 32, "data", 7, 100, 90),  # not hex
    ("ab" * 32, "blob", 7, 100, 90),  # unknown type
    ("ab" * 32, "data", 6, 100, 90),  # inside the pack header
    ("ab" * 32, "data", 1 << 62, 100, 90),  # past any pack
    ("ab" * 32, "data", 7, 0, 90),  # empty envelope
    ("ab" * 32, "data", 7, MAX_STORED_BLOB + 1, 90),  # longer than a blob can be
    ("ab" * 32, "data", 7, 100, -1),
    ("ab" * 32, "data", 7, 100, MAX_BLOB_SIZE + 1),
]


def entry_ok(entry: tuple[object, ...]) -> bool:
    try:
        check_blob_entry(entry)  # type: ignore[arg-type]
    except IntegrityError:
        return False
    return True


@pytest.mark.parametrize("bad", MALFORMED)
def test_one_malformed_entry_among_many_fails_the_list_as_it_fails_alone(bad: tuple[object, ...]) -> None:
    assert not entry_ok(bad)
    assert not blob_entries_valid([GOOD] * 1000 + [list(bad)] + [GOOD] * 10)


@pytest.mark.parametrize(
    "odd",
    [
        ["ab" * 32, "data", True, 100, 90],  # a bool is no offset
        ["ab" * 32, "data", 7.0, 100, 90],
        ["ab" * 32, ["data"], 7, 100, 90],  # unhashable type field
        [b"\xab" * 32, "data", 7, 100, 90],  # bytes, not a hex str
        ["ab" * 32, "data", 7, 100],  # four fields
        ("ab" * 32, "data", 7, 100, 90),  # a tuple: JSON never gives one
        "ab" * 32,
        None,
    ],
)
def test_entries_of_the_wrong_shape_or_type_fail(odd: object) -> None:
    assert not blob_entries_valid([GOOD, odd])


def test_well_formed_entries_pass_whatever_their_number() -> None:
    assert blob_entries_valid([])
    tree = ["cd" * 32, "tree", 1 << 20, MAX_STORED_BLOB, MAX_BLOB_SIZE]
    assert blob_entries_valid([GOOD, tree] * 5000)
    assert not blob_entries_valid("not a list")
