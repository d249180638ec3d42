"""The store's write time against the writer registry (repo/trust.py ``Trust.judge``): S3
LastModified counts whole seconds, so a back-dated write the store dates to the second its
writer was issued in is refused as back-dated (what ``check`` must say), not as signed
before the writer existed; a revocation still counts from the stored second. Pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lifeboat.crypto.writers import ANY_ASSET, Registry, WriterEntry
from lifeboat.repo.trust import SignatureCheck, Trust

ISSUED = datetime(2026, 12, 5, 15, 32, 47, 180225, tzinfo=UTC)
STORED_IN_THAT_SECOND = ISSUED.replace(microsecond=0)  # as S3 dates a write 0.3 s later
WRITER = b"w" * 32


def trust(revoked: datetime | None = None) -> Trust:
    entry = WriterEntry("web-1", 1, WRITER, (ANY_ASSET,), ISSUED, revoked)
    registry = Registry("repo", b"r" * 32, 2, "", ISSUED, (entry,))
    return Trust(registry, timedelta(minutes=5))


def reason(verdict_trust: Trust, claimed: datetime, stored: datetime) -> str | None:
    verdict = verdict_trust.judge(SignatureCheck(WRITER), "web", claimed, now=claimed, stored=stored)
    return verdict.reason


def test_a_write_stored_in_the_second_its_writer_was_issued_in_is_accepted() -> None:
    assert reason(trust(), ISSUED + timedelta(milliseconds=300), STORED_IN_THAT_SECOND) is None


def test_a_back_dated_claim_stored_in_that_second_is_refused_as_back_dated() -> None:
    refused = reason(trust(), ISSUED - timedelta(days=3), STORED_IN_THAT_SECOND)

    assert refused is not None and refused.startswith("back-dated")


def test_a_write_stored_a_second_before_the_issue_is_still_refused_as_before_it() -> None:
    stored = STORED_IN_THAT_SECOND - timedelta(seconds=1)

    assert reason(trust(), stored, stored) == "signed before the writer was issued"


def test_a_revoked_writer_is_judged_from_the_stored_second_not_a_second_later() -> None:
    revoked = ISSUED + timedelta(hours=1, milliseconds=500)
    stored_before = revoked.replace(microsecond=0)  # written in the revocation's second, before it
    stored_after = stored_before + timedelta(seconds=1)

    assert reason(trust(revoked), stored_before, stored_before) is None
    assert reason(trust(revoked), revoked - timedelta(hours=1), stored_after) == "writer revoked"


def test_another_writers_sealed_header_stored_in_its_issue_second_is_its_writers_not_refused() -> None:
    """A header this key cannot open has no claimed time: the stored second is all there is,
    judged by the same rule (a host listing a fleet's repository saw a new writer's first
    snapshot refused as signed before that writer was issued)."""
    from lifeboat.repo.sealed import Unopened
    from lifeboat.repo.snapshots import _judged_unopened

    unopened = Unopened(WRITER)

    assert _judged_unopened("ab" * 32, unopened, "web", trust(), STORED_IN_THAT_SECOND) == "web-1"
    before = _judged_unopened(
        "ab" * 32, unopened, "web", trust(), STORED_IN_THAT_SECOND - timedelta(seconds=1)
    )
    assert not isinstance(before, str) and before is not None
    assert before.reason == "signed before the writer was issued"


def test_a_writer_issued_on_the_next_whole_second_is_still_after_the_write() -> None:
    """Stored at 47 means written in [47, 48): a writer issued at exactly 48.000000 came after."""
    issued = STORED_IN_THAT_SECOND + timedelta(seconds=1)
    entry = WriterEntry("web-1", 1, WRITER, (ANY_ASSET,), issued)
    later = Trust(Registry("repo", b"r" * 32, 2, "", issued, (entry,)), timedelta(minutes=5))

    assert (
        reason(later, STORED_IN_THAT_SECOND, STORED_IN_THAT_SECOND) == "signed before the writer was issued"
    )


def test_a_writer_issued_and_revoked_within_the_stored_second_is_judged_at_its_issue() -> None:
    revoked = ISSUED + timedelta(milliseconds=500)

    assert reason(trust(revoked), ISSUED - timedelta(milliseconds=100), STORED_IN_THAT_SECOND) is None
