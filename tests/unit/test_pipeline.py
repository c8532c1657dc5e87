"""The pipeline against a fake OpenFlow 1.3 flow table: where does each packet go?"""
from fakeswitch import DPID, H1, H2, H3, IP, MAC, MON

from iadm.sdn import pipeline
from iadm.sdn.verdicts import Verdict


def ports_only(outputs):
    return sorted(o for o in outputs if o != "controller")


def test_unknown_source_goes_to_controller_and_is_flooded_once_to_monitor(gateway):
    outputs = gateway.send_packet(H1)  # broadcast from an unknown host
    assert "controller" in outputs
    assert ports_only(outputs) == [H2, MON, H3]
    assert outputs.count(MON) == 1


def test_learned_unicast_goes_to_destination_and_monitor_only(gateway):
    gateway.learn_all()
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert gateway.send_packet(H2, dst_port=H1) == [H1, MON]
    assert gateway.send_packet(H3, dst_port=H1) == [H1, MON]


def test_known_source_no_longer_reaches_controller(gateway):
    gateway.send_packet(H1)
    gateway.send_packet(H2)
    assert "controller" not in gateway.send_packet(H1, dst_port=H2)


def test_flood_from_known_source_reaches_monitor_exactly_once(gateway):
    gateway.learn_all()
    outputs = gateway.send_packet(H1)  # broadcast, e.g. ARP
    assert sorted(outputs) == [H2, MON, H3]
    outputs = gateway.send_packet(H1, eth_dst="00:00:00:00:00:99")  # unknown unicast
    assert sorted(outputs) == [H2, MON, H3]


def test_traffic_to_or_from_the_monitor_is_not_mirrored_twice(gateway):
    gateway.learn_all()
    assert gateway.send_packet(H1, dst_port=MON) == [MON]
    assert gateway.send_packet(MON, dst_port=H1) == [H1]
    assert gateway.send_packet(MON) == [H1, H2, H3]


def test_block_by_ipv4_source_wins_over_forwarding(gateway):
    gateway.learn_all()
    status, doc = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=60))
    assert status == 201
    assert gateway.send_packet(H1, dst_port=H2) == []
    # Only that source: ARP from H1 and IPv4 from others still pass.
    assert gateway.send_packet(H1, dst_port=H2, ipv4=False) == [H2, MON]
    assert gateway.send_packet(H3, dst_port=H2) == [H2, MON]
    cookie = pipeline.block_cookie(doc["block"]["block_id"])
    assert gateway.switch.counter(cookie) == 1


def test_verdict_reports_only_switches_that_confirmed(gateway):
    _, doc = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=60))
    assert doc["installed_on"] == [f"{DPID:016x}"]
    gateway.confirming = False
    _, doc = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H3], duration=60))
    assert doc["installed_on"] == []
    assert len(gateway.core.blocks()) == 2  # kept: the switch gets it again when it reconnects


def test_block_by_mac_and_port_stops_forged_sources(gateway):
    gateway.learn_all()
    gateway.core.apply_verdict(Verdict("block", src_mac=MAC[H3], in_port=H3, duration=60))
    for forged in ("10.0.0.2", "192.0.2.7", "10.0.0.253"):
        assert gateway.send_packet(H3, dst_port=H1, src_ip=forged) == []
    assert gateway.send_packet(H2, dst_port=H1) == [H1, MON]


def test_mac_verdict_is_pinned_to_the_learned_port(gateway):
    gateway.learn_all()
    _, doc = gateway.core.apply_verdict(Verdict("block", src_mac=MAC[H3].upper(), duration=60))
    assert doc["block"]["match"] == {"eth_src": MAC[H3], "in_port": H3}
    assert gateway.send_packet(H3, dst_port=H1, src_ip="192.0.2.7") == []
    # The same MAC forged on another port is not this block (and H1's traffic is untouched).
    assert H2 in gateway.send_packet(H1, dst_port=H2, eth_src=MAC[H3])
    status, undone = gateway.core.apply_verdict(Verdict("unblock", src_mac=MAC[H3]))
    assert undone["unblocked"] == [doc["block"]["block_id"]]
    assert H1 in gateway.send_packet(H3, dst_port=H1)


def test_controller_in_alert_only_mode_never_drops(tmp_path):
    from fakeswitch import Gateway
    gateway = Gateway(tmp_path)
    gateway.core.alert_only = True
    gateway.learn_all()
    _, doc = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=60))
    assert doc["block"]["action"] == "alert"
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert gateway.switch.counter(pipeline.block_cookie(doc["block"]["block_id"])) == 1


def test_alert_only_mark_counts_but_forwards(gateway):
    gateway.learn_all()
    _, doc = gateway.core.apply_verdict(Verdict("alert", src_ip=IP[H1], duration=60))
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert gateway.switch.counter(pipeline.block_cookie(doc["block"]["block_id"])) == 1


def test_block_expires_by_its_hard_timeout(gateway):
    gateway.learn_all()
    gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=30))
    gateway.clock.advance(29)
    assert gateway.send_packet(H1, dst_port=H2) == []
    gateway.clock.advance(1)
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert gateway.core.blocks() == []


def test_unblock_removes_only_that_block(gateway):
    gateway.learn_all()
    _, first = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=60))
    gateway.core.apply_verdict(Verdict("block", src_ip=IP[H3], duration=60))
    status, doc = gateway.core.apply_verdict(Verdict("unblock", block_id=first["block"]["block_id"]))
    assert status == 200
    assert gateway.send_packet(H1, dst_port=H2) == [H2, MON]
    assert gateway.send_packet(H3, dst_port=H2) == []


def test_repeated_verdict_replaces_the_block_and_extends_it(gateway):
    gateway.learn_all()
    gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=10))
    gateway.clock.advance(8)
    _, doc = gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=10))
    assert len(doc["replaced"]) == 1
    assert len(gateway.switch.table(pipeline.TABLE_BLOCKS)) == 2  # one block + the miss
    gateway.clock.advance(8)
    assert gateway.send_packet(H1, dst_port=H2) == []


def test_reconnect_restores_blocks_with_their_remaining_time(gateway):
    gateway.learn_all()
    gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=100))
    gateway.clock.advance(40)
    gateway.core.switch_connected(DPID, gateway.ports)  # the switch came back
    blocks = [e for e in gateway.switch.table(pipeline.TABLE_BLOCKS) if e.priority == pipeline.PRIO_BLOCK]
    assert [b.hard_timeout for b in blocks] == [60]
    assert gateway.switch.table(pipeline.TABLE_FORWARD)[0].priority == pipeline.PRIO_MISS  # relearning
    assert gateway.send_packet(H1, dst_port=H2) == []


def test_expired_blocks_are_not_restored(gateway):
    gateway.core.apply_verdict(Verdict("block", src_ip=IP[H1], duration=10))
    gateway.clock.advance(11)
    gateway.core.switch_connected(DPID, gateway.ports)
    assert [e for e in gateway.switch.table(0) if e.priority == pipeline.PRIO_BLOCK] == []


def test_host_move_relearns_and_drops_the_old_port(gateway):
    gateway.learn_all()
    # H1's MAC shows up on port 4 (it moved).
    outputs = gateway.send_packet(H3, eth_src=MAC[H1], dst_port=H2)
    assert "controller" in outputs
    assert gateway.send_packet(H2, dst_port=H1) == [H3, MON]
    learn = gateway.switch.table(pipeline.TABLE_LEARN)
    assert not any(e.match == {"in_port": H1, "eth_src": MAC[H1]} for e in learn)


def test_monitor_port_by_number_and_missing_name(tmp_path):
    from fakeswitch import Gateway
    (tmp_path / "by_number").mkdir()
    by_number = Gateway(tmp_path / "by_number", monitor_port=MON)
    by_number.learn_all()
    assert by_number.send_packet(H1, dst_port=H2) == [H2, MON]
    missing = Gateway(tmp_path, monitor_port="s1-eth9")
    missing.learn_all()
    assert missing.send_packet(H1, dst_port=H2) == [H2]  # mirroring off, forwarding on


def test_learning_stops_at_max_hosts(gateway):
    gateway.core.max_hosts = 2
    gateway.learn_all()
    learned = [e for e in gateway.switch.table(pipeline.TABLE_LEARN) if e.priority == pipeline.PRIO_LEARNED]
    assert len(learned) == 2


def test_meter_guards_packet_ins(gateway):
    misses = [e for e in gateway.switch.table(pipeline.TABLE_LEARN) if e.priority == pipeline.PRIO_MISS]
    assert misses[0].meter == pipeline.PACKET_IN_METER_ID
    assert gateway.switch.meters[pipeline.PACKET_IN_METER_ID].rate_pps == 100
    gateway.send_packet(H1)
    assert gateway.switch.meter_hits[pipeline.PACKET_IN_METER_ID] == 1


def test_no_meter_when_switch_has_none(gateway):
    gateway.core.switch_connected(DPID, gateway.ports, meters=False)
    assert gateway.switch.table(pipeline.TABLE_LEARN)[0].meter is None


def test_hard_timeout_is_capped_to_openflow_range():
    entry = pipeline.block_entry(1, {"eth_type": 0x800, "ipv4_src": "10.0.0.1"}, 10**6)
    assert entry.hard_timeout == 0xFFFF
