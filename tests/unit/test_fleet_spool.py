"""The publisher's on-disk spool: order, a cursor that survives a restart, a bound on its bytes."""
import pytest

from iadm.fleet.spool import Spool, SpoolBusy


def test_events_come_back_in_order_across_segments_and_a_restart(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    lines = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * 500) for n in range(300)]   # > one 64 KiB segment
    for line in lines:
        spool.append([line])
    assert len(list(tmp_path.glob("*.jsonl"))) > 1
    first = spool.peek(120)
    assert first == lines[:120]
    spool.commit(100)                 # 20 of them were not confirmed
    spool.close()
    again = Spool(str(tmp_path), max_bytes=1 << 20)
    assert again.undelivered() == 200
    rest = []
    while True:
        batch = again.peek(64)
        if not batch:
            break
        rest += batch
        again.commit(len(batch))
    assert rest == lines[100:]
    assert len(list(tmp_path.glob("*.jsonl"))) == 1   # delivered segments are gone


def test_the_spool_keeps_its_bound_and_counts_what_it_dropped(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    line = b"y" * 1023
    for _ in range(3000):             # 3 MiB into a 1 MiB spool
        spool.append([line])
    assert spool.bytes <= (1 << 20) + spool.segment_bytes
    assert spool.dropped > 0 and spool.undelivered() + spool.dropped == 3000
    assert spool.peek(1) == [line]


def test_a_damaged_cursor_resends_from_the_oldest_event(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=1 << 20)
    spool.append([b"a", b"b"])
    spool.peek(2)
    spool.commit(1)
    spool.close()
    (tmp_path / "cursor").write_text("garbage")
    assert Spool(str(tmp_path), max_bytes=1 << 20).peek(5) == [b"a", b"b"]


def test_a_spool_has_one_writer(tmp_path):
    first = Spool(str(tmp_path), max_bytes=1 << 20)
    with pytest.raises(SpoolBusy, match=f"{tmp_path} is in use by another process"):
        Spool(str(tmp_path), max_bytes=1 << 20)
    first.close()
    Spool(str(tmp_path), max_bytes=1 << 20).close()
