from fakeswitch import FakeClock

from iadm.sdn.blockstore import BlockStore

MATCH = {"eth_type": 2048, "ipv4_src": "10.0.0.1"}


def test_blocks_survive_reopening(tmp_path):
    clock = FakeClock()
    path = str(tmp_path / "b.sqlite")
    store = BlockStore(path, clock=clock)
    block = store.add("block", MATCH, 120, reason="SYN flood", source="rule:1000001")
    store.close()
    clock.advance(20)
    reopened = BlockStore(path, clock=clock)
    [again] = reopened.active()
    assert again == block
    assert again.remaining(clock()) == 100
    assert reopened.find(dict(reversed(list(MATCH.items())))) == [block]


def test_expired_blocks_are_purged(tmp_path):
    clock = FakeClock()
    store = BlockStore(str(tmp_path / "b.sqlite"), clock=clock)
    store.add("block", MATCH, 10)
    keep = store.add("alert", {"eth_src": "00:00:00:00:00:04"}, 100)
    clock.advance(10)
    assert store.active() == [keep]
    assert store.remove(keep.block_id)
    assert not store.remove(keep.block_id)
    assert store.active() == []


def test_ids_are_not_reused_after_removal(tmp_path):
    store = BlockStore(str(tmp_path / "b.sqlite"), clock=FakeClock())
    first = store.add("block", MATCH, 10)
    store.remove(first.block_id)
    assert store.add("block", MATCH, 10).block_id > first.block_id
