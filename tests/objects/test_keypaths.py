"""The mapping between object keys and paths in a directory is one-to-one both ways, and
no key escapes the directory (pure logic: every short segment over an alphabet of the
characters that matter is tried)."""

from __future__ import annotations

import itertools

from lifeboat.assets.objects.keypaths import key_to_relpath, relpath_to_key

ALPHABET = ["%", "2", "5", "E", "0", ".", "a"]
SEGMENTS = ["".join(p) for n in range(7) for p in itertools.product(ALPHABET, repeat=n)]


def test_every_key_segment_comes_back_and_none_escapes() -> None:
    for segment in SEGMENTS:
        encoded = key_to_relpath(segment)
        assert relpath_to_key(encoded) == segment, segment
        assert encoded not in ("", ".", "..") and "/" not in encoded, segment


def test_every_file_name_is_a_key_that_names_it_again() -> None:
    """A directory source's files are opened by the key's path: a name with no key of its
    own (`50%off.jpg` once was) could not be backed up."""
    for name in (s for s in SEGMENTS if s not in ("", ".", "..")):
        assert key_to_relpath(relpath_to_key(name)) == name, name
    assert relpath_to_key("50%off.jpg/%25/%2E") == "50%off.jpg/%25/."


def test_keys_of_several_segments_map_segment_by_segment() -> None:
    key = "a/../%2E/./50%off.jpg/"
    assert key_to_relpath(key) == "a/%2E%2E/%25%2E/%2E/50%off.jpg/%00"
    assert relpath_to_key(key_to_relpath(key)) == key


def test_keys_of_snapshots_taken_under_the_first_mapping_name_the_same_files() -> None:
    """The first mapping escaped every '%' of a name: the file `100%25.txt` became the key
    `100%.txt`. A dir:// snapshot without the `key_paths` label is read through
    ``key_of_legacy``, so that a restore (in place too) gives each file its own name back."""
    from lifeboat.assets.objects.keypaths import key_of_legacy

    def first_mapping_key(name: str) -> str:  # how the first walk named a file
        special = {"%00": "", "%2E": ".", "%2E%2E": ".."}
        return "/".join(special.get(p) or p.replace("%25", "%") for p in name.split("/"))

    for name in ("100%25.txt", "a%2520b.pdf", "%2E/dots", "%252E", "plain.txt", "d/%25/x"):
        assert key_to_relpath(key_of_legacy(first_mapping_key(name))) == name, name
