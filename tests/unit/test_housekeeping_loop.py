"""The schedule of the passes over every session (controller.housekeeping_loop.Every)."""

from __future__ import annotations

from controller.housekeeping_loop import Every, foreign_namespace


def test_the_first_pass_waits_one_interval_then_one_per_interval() -> None:
    audits = Every(600.0)
    assert not audits.due(1000.0)  # the first ask: a restart is resuming, not now
    assert not audits.due(1599.0)
    assert audits.due(1600.0)
    assert not audits.due(1601.0)
    assert audits.due(2200.0)


def test_a_late_pass_counts_the_next_interval_from_when_it_ran() -> None:
    audits = Every(10.0)
    audits.due(0.0)
    assert audits.due(35.0)  # late (a long sweep held the loop): once, not three times
    assert not audits.due(44.0)
    assert audits.due(45.0)


def test_a_lease_held_from_another_namespace_is_told_apart() -> None:
    assert foreign_namespace("shard-b/op-0", "shard-a") == "shard-b"
    assert foreign_namespace("shard-a/op-1", "shard-a") is None  # our standby or ourselves
    assert foreign_namespace(None, "shard-a") is None  # free
    assert foreign_namespace("op-0", "shard-a") is None  # a release from before namespaces
