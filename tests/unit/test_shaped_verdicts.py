"""Verdicts shaped on the attack (destination, protocol, port, ingress port; drop or rate-limit
through an OpenFlow 1.3 meter), and no self-inflicted outage through the uplink, against the
fake flow table; the messages serialised as OpenFlow 1.3."""
import pytest
from fakeswitch import H1, H2, H3, IP, MAC, Gateway
from os_ken.ofproto import ofproto_v1_3
from test_ofmsg import Datapath, round_trip

from iadm.sdn import ofmsg, pipeline
from iadm.sdn.verdicts import Verdict, VerdictError

ROUTER = H1          # in these tests port 1 is the uplink: the upstream router's port


@pytest.fixture
def gateway(tmp_path):
    gw = Gateway(tmp_path, allowlist=("10.0.0.253",), uplink_port="s1-eth1")
    gw.learn_all()
    return gw


def from_outside(gw, dport, proto=6, src="198.51.100.7"):
    return gw.send_packet(ROUTER, H2, src_ip=src, ip_proto=proto, **({"tcp_dst": dport} if proto == 6 else
                                                                     {"udp_dst": dport}))


def test_the_routers_mac_and_the_whole_uplink_are_never_blocked(gateway):
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("block", src_mac=MAC[ROUTER]))
    assert err.value.status == 403 and err.value.field == "src_mac" and "uplink" in str(err.value)
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("block", in_port=ROUTER))
    assert err.value.status == 403 and err.value.field == "in_port"
    assert gateway.switch.table(pipeline.TABLE_BLOCKS)[-1].priority == pipeline.PRIO_MISS   # nothing installed
    assert H2 in from_outside(gateway, 80)


def test_a_flood_through_the_uplink_is_rate_limited_by_its_shape(gateway):
    status, doc = gateway.core.apply_verdict(Verdict("rate_limit", dst_ip="10.0.0.2/32", ip_proto=6, dst_port=80,
                                                     rate_pps=5, source="test"))
    assert status == 201 and doc["block"]["action"] == "rate_limit" and doc["block"]["rate"] == 5
    passed = sum(H2 in from_outside(gateway, 80, src=f"198.51.100.{i}") for i in range(50))
    assert passed == 5                                    # the meter lets 5 a second through
    assert H2 in from_outside(gateway, 22)                # another port of the victim: untouched
    assert H2 in gateway.send_packet(H3, H2)              # a LAN host to the victim: untouched (no tcp 80)
    gateway.clock.advance(1.0)
    assert sum(H2 in from_outside(gateway, 80) for _ in range(10)) == 5    # the next second, 5 again
    meter = pipeline.block_meter_id(doc["block"]["block_id"])
    assert meter in gateway.switch.meters
    gateway.core.apply_verdict(Verdict("unblock", block_id=doc["block"]["block_id"]))
    assert meter not in gateway.switch.meters and sum(H2 in from_outside(gateway, 80) for _ in range(10)) == 10


def test_a_shape_narrowed_to_the_uplink_leaves_the_lan_s_own_traffic_of_that_shape_alone(gateway, tmp_path):
    status, doc = gateway.core.apply_verdict(Verdict("rate_limit", dst_ip="10.0.0.2/32", ip_proto=6, dst_port=80,
                                                     in_port="uplink", rate_pps=5, source="test"))
    assert status == 201 and doc["block"]["match"]["in_port"] == ROUTER   # resolved to the uplink's number
    assert sum(H2 in from_outside(gateway, 80, src=f"198.51.100.{i}") for i in range(50)) == 5
    lan = sum(H2 in gateway.send_packet(H3, H2, src_ip=IP[H3], ip_proto=6, tcp_dst=80) for _ in range(50))
    assert lan == 50                                      # Host1's requests to the same port: all through
    # a controller that has no uplink port refuses it, naming the field; the sender retries without it
    (tmp_path / "bare").mkdir()
    bare = Gateway(tmp_path / "bare")
    bare.learn_all()
    with pytest.raises(VerdictError) as err:
        bare.core.apply_verdict(Verdict("rate_limit", dst_ip="10.0.0.2", ip_proto=6, dst_port=80, in_port="uplink",
                                        rate_pps=5))
    assert err.value.status == 409 and err.value.field == "in_port"


def test_a_shaped_drop_and_a_port_block_on_the_lan(gateway):
    with pytest.raises(VerdictError, match="holds allowlisted 10.0.0.253"):   # the monitor is in that /24
        gateway.core.apply_verdict(Verdict("block", dst_ip="10.0.0.0/24", ip_proto=17, dst_port=53))
    gateway.core.apply_verdict(Verdict("block", dst_ip="10.0.0.2", ip_proto=17, dst_port=53))
    assert from_outside(gateway, 53, proto=17) == [] and H2 in from_outside(gateway, 123, proto=17)
    gateway.core.apply_verdict(Verdict("block", in_port=H3))      # a random-MAC flood's port
    assert gateway.send_packet(H3, H2) == [] and gateway.send_packet(H3, H2, eth_src="02:11:22:33:44:55") == []
    assert H2 in gateway.send_packet(H1, H2)


def test_traffic_to_an_allowlisted_host_is_rate_limited_never_dropped(gateway):
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("block", dst_ip="10.0.0.253", ip_proto=6))
    assert err.value.status == 403 and err.value.field == "dst_ip" and "rate_limit" in str(err.value)
    assert gateway.core.apply_verdict(Verdict("rate_limit", dst_ip="10.0.0.253", ip_proto=6, rate_pps=100))[0] == 201


def test_a_rate_limit_survives_a_controller_restart(gateway, tmp_path):
    _, doc = gateway.core.apply_verdict(Verdict("rate_limit", dst_ip="10.0.0.2", ip_proto=17, rate_kbps=800,
                                                duration=60))
    again = Gateway(tmp_path, uplink_port="s1-eth1")      # same store: a new controller process
    meter = pipeline.block_meter_id(doc["block"]["block_id"])
    assert again.switch.meters[meter].kbps and again.switch.meters[meter].rate_pps == 800
    [entry] = [e for e in again.switch.table(pipeline.TABLE_BLOCKS) if e.meter == meter]
    assert entry.match["ipv4_dst"] == IP[H2] and entry.goto == pipeline.TABLE_LEARN


def test_shaped_ops_serialise_as_openflow_13():
    ops = pipeline.rate_limit_ops(7, pipeline.block_match(dst_ip="10.0.0.0/24", ip_proto=6, dst_port=80), 60,
                                  rate=5000, kbps=True)
    msgs = ofmsg.to_messages(Datapath(), ops + [pipeline.MeterDelete(pipeline.block_meter_id(7))])
    flow = round_trip(msgs[2])
    for m in msgs[:2] + msgs[3:]:
        m.set_xid(1)
        m.serialize()
    add = msgs[1]
    assert add.command == ofproto_v1_3.OFPMC_ADD and add.flags & ofproto_v1_3.OFPMF_KBPS and add.bands[0].rate == 5000
    assert dict(flow.match.items())["ipv4_dst"] == ("10.0.0.0", "255.255.255.0")
    assert dict(flow.match.items())["tcp_dst"] == 80 and flow.instructions[0].meter_id == pipeline.block_meter_id(7)
    assert msgs[3].command == ofproto_v1_3.OFPMC_DELETE and msgs[3].meter_id == pipeline.block_meter_id(7)


def test_a_port_flooding_the_mac_table_stops_learning_and_keeps_its_known_hosts(gateway):
    """macof at one port: after 50 new MACs within 10 s learning stops there and unknown sources
    are dropped at that port; the host it had learned still talks, other ports still learn."""
    for i in range(60):
        gateway.send_packet(H3, H2, eth_src=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}")
    assert gateway.core.counts.get("ports_guarded") == 1
    assert gateway.send_packet(H3, H2, eth_src="02:99:00:00:00:01") == []          # dropped, no packet-in
    assert H2 in gateway.send_packet(H3, H2)                                       # H3's own MAC: learned
    assert "controller" in gateway.send_packet(H2, H1, eth_src="02:aa:00:00:00:01")   # other ports learn
    for i in range(60):   # a router brings no new MACs: the uplink is never guarded
        gateway.send_packet(ROUTER, H2, eth_src=f"02:01:00:00:{i // 256:02x}:{i % 256:02x}")
    assert gateway.core.counts.get("ports_guarded") == 1
    gateway.clock.advance(gateway.core.guard_seconds + 1)
    assert "controller" in gateway.send_packet(H3, H2, eth_src="02:99:00:00:00:02")   # the guard lapsed


def test_a_guard_verdict_stops_learning_at_the_port_a_flood_mac_came_in_and_is_unblocked_by_id(gateway):
    """The monitor names a MAC the flood sent; the controller guards the port it entered at: new
    sources there are dropped (no packet-in), H3's own MAC still talks, other ports still learn;
    listed like a block, restored on reconnect, and unblocked by id (the port learns again)."""
    gateway.send_packet(H3, H2, eth_src="02:66:00:00:00:01")          # one of the flood's MACs, learned
    status, doc = gateway.core.apply_verdict(Verdict("guard", src_mac="02:66:00:00:00:01", duration=60,
                                                     reason="MAC flood", source="test"))
    assert status == 201 and doc["block"]["action"] == "guard" and doc["block"]["match"] == {"in_port": H3}
    assert gateway.send_packet(H3, H2, eth_src="02:66:00:00:00:02") == []          # a new source: dropped
    assert H2 in gateway.send_packet(H3, H2)                                       # H3's own MAC: learned
    assert "controller" in gateway.send_packet(H2, H1, eth_src="02:aa:00:00:00:01")   # other ports learn
    assert [b["action"] for b in gateway.core.blocks()] == ["guard"]
    gateway.core.switch_connected(1, gateway.ports)                                  # a reconnect: restored
    assert gateway.send_packet(H3, H2, eth_src="02:66:00:00:00:03") == []
    gateway.core.apply_verdict(Verdict("unblock", block_id=doc["block"]["block_id"]))
    assert "controller" in gateway.send_packet(H3, H2, eth_src="02:66:00:00:00:04")   # learning again
    assert gateway.core.blocks() == []


def test_a_guard_is_refused_for_an_unseen_mac_the_uplink_and_the_monitor(gateway):
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("guard", src_mac="02:77:00:00:00:01"))
    assert err.value.status == 404 and err.value.field == "src_mac"
    for port in (ROUTER, 3):   # the uplink (a router brings every outside MAC), the monitor's port
        with pytest.raises(VerdictError) as err:
            gateway.core.apply_verdict(Verdict("guard", in_port=port))
        assert err.value.status == 403
    with pytest.raises(VerdictError):
        gateway.core.apply_verdict(Verdict("guard", src_mac=MAC[ROUTER]))   # learned on the uplink
    assert gateway.core.blocks() == []


def test_a_guard_finds_a_flood_mac_the_controller_saw_but_no_longer_learned(gateway):
    """Past its own port guard the controller learns no more of the flood's MACs, but it still
    knows which port brought them: the monitor's verdict may name any of the first ones."""
    flood = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(60)]
    for mac in flood:
        gateway.send_packet(H3, H2, eth_src=mac)
    assert gateway.core.counts.get("ports_guarded") == 1
    unlearned = [m for m in flood if not gateway.core.where_is(m)]
    status, doc = gateway.core.apply_verdict(Verdict("guard", src_mac=unlearned[0]))   # made the guard: seen
    assert status == 201 and doc["block"]["match"] == {"in_port": H3}
    with pytest.raises(VerdictError) as err:     # after it, dropped at the switch: never seen by the controller
        gateway.core.apply_verdict(Verdict("guard", src_mac=unlearned[-1]))
    assert err.value.status == 404
