"""The token buckets behind the per-key rate limits (api/ratelimit.py), in-process.

Contract: a bucket starts full (``burst``), refills at ``per_second`` up to ``burst``, and
each request takes one token while there is one; the buckets shared by forked processes
count exactly like one process's; a key pushed out of a full shared table starts full again.
(Sharing across real processes is tested in test_processes.py.)
"""

from __future__ import annotations

import pytest

from getfluxly_server.api.ratelimit import Buckets, LocalBuckets, SharedBuckets


@pytest.mark.parametrize("make", [LocalBuckets, SharedBuckets], ids=["local", "shared"])
def test_a_bucket_starts_full_spends_and_refills(make: type[Buckets]) -> None:
    buckets = make()
    spent = [buckets.spend("key_a", 0.5, 3, now) for now in (0.0, 0.0, 0.0, 0.0)]
    assert spent == [(True, 2.0), (True, 1.0), (True, 0.0), (False, 0.0)]
    assert buckets.spend("key_b", 0.5, 3, 0.0) == (True, 2.0)  # keys are apart
    assert buckets.spend("key_a", 0.5, 3, 1.0) == (False, 0.5)  # half a token back
    assert buckets.spend("key_a", 0.5, 3, 3.0) == (True, 0.5)  # 1.5, one taken
    assert buckets.spend("key_a", 0.5, 3, 100.0) == (True, 2.0)  # never above the burst


def test_a_key_pushed_out_of_a_full_shared_table_starts_full() -> None:
    buckets = SharedBuckets(slots=2)
    assert buckets.spend("key_a", 0.001, 3, 0.0) == (True, 2.0)
    assert buckets.spend("key_b", 0.001, 3, 1.0) == (True, 2.0)
    # No free slot: key_c takes the least recently used one (key_a's).
    assert buckets.spend("key_c", 0.001, 3, 2.0) == (True, 2.0)
    allowed, tokens = buckets.spend("key_a", 0.001, 3, 3.0)
    assert allowed
    assert tokens == 2.0  # full again, not 2.003 - 1
