"""InOrderOffsets: commit one past the last record handled, never past an unchecked first hole."""

from __future__ import annotations

from fraudstream.core.offsets import InOrderOffsets


def test_commits_past_marker_holes_once_the_first_record_is_checked() -> None:
    offs: InOrderOffsets[str] = InOrderOffsets()
    assert offs.committable("p0", None) is None
    for offset in (12, 13, 15, 18):  # 14, 16, 17: commit markers / aborted records
        offs.handled("p0", offset)
    assert offs.to_verify() == {"p0": 12}
    assert offs.committable("p0", 10) is None  # 10..11 not checked yet
    offs.verified("p0", 12)
    assert offs.to_verify() == {}
    assert offs.position("p0") == 19
    assert offs.position("p1") is None
    assert offs.committable("p0", 10) == 19
    assert offs.committable("p0", 19) is None  # nothing new


def test_reset_makes_the_next_record_a_first_one_again() -> None:
    offs: InOrderOffsets[str] = InOrderOffsets()
    offs.handled("p0", 5)
    offs.verified("p0", 5)
    offs.reset("p0")  # seek back to refetch 2..4
    assert offs.committable("p0", 2) is None
    offs.handled("p0", 2)
    assert offs.to_verify() == {"p0": 2}
    offs.verified("p0", 99)  # a stale check does not clear a newer head
    assert offs.to_verify() == {"p0": 2}
    offs.verified("p0", 2)
    offs.handled("p0", 3)
    assert offs.committable("p0", 2) == 4


def test_clear_starts_every_partition_over() -> None:
    offs: InOrderOffsets[str] = InOrderOffsets()
    for tp in ("p0", "p1"):
        offs.handled(tp, 7)
        offs.verified(tp, 7)
    offs.clear()
    assert offs.committable("p0", None) is None
    assert offs.committable("p1", None) is None
    offs.handled("p1", 8)
    assert offs.to_verify() == {"p1": 8}
