from collections import Counter

import pytest

from cloudburst.kvs.ring import HashRing, stable_hash


def test_stable_hash_is_fixed():
    # Pinned so that every process, machine and release places keys alike.
    assert stable_hash("key") == 0xCE7CCCADC3A94CF5


def test_owners_are_distinct_and_deterministic():
    ring = HashRing(["a", "b", "c"])
    for i in range(200):
        owners = ring.owners(f"key{i}", 2)
        assert len(owners) == len(set(owners)) == 2
        assert HashRing(["a", "b", "c"]).owners(f"key{i}", 2) == owners


def test_more_owners_than_members_returns_all():
    assert sorted(HashRing([0, 1]).owners("k", 5)) == [0, 1]


def test_keys_spread_over_members():
    ring = HashRing(range(4))
    counts = Counter(ring.owners(f"user:{i}")[0] for i in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 8000 / 4 * 0.6


def test_adding_a_member_moves_only_its_share():
    before, after = HashRing(range(4)), HashRing(range(5))
    moved = sum(before.owners(f"k{i}")[0] != after.owners(f"k{i}")[0] for i in range(4000))
    assert moved < 4000 * 0.35


def test_empty_ring_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        HashRing([])
