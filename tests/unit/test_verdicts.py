import json

import pytest

from iadm.sdn.verdicts import Allowlist, Verdict, VerdictError, parse_verdict


def parse(**doc):
    return parse_verdict(json.dumps(doc).encode())


def test_block_by_ip():
    v = parse(action="block", src_ip="10.0.0.1", duration=60, reason="SYN flood", source="rule:1")
    assert v == Verdict("block", src_ip="10.0.0.1", duration=60, reason="SYN flood", source="rule:1")


def test_mac_is_normalised_and_port_allowed():
    v = parse(action="alert", src_mac="AA:BB:CC:00:11:22", in_port=3)
    assert (v.src_mac, v.in_port) == ("aa:bb:cc:00:11:22", 3)


def test_shaped_verdicts_are_normalised():
    v = parse(action="rate_limit", dst_ip="10.0.0.2", ip_proto="TCP", dst_port=80, rate_pps=500)
    assert (v.dst_ip, v.ip_proto, v.dst_port, v.rate_pps, v.shaped) == ("10.0.0.2/32", 6, 80, 500, True)
    assert parse(action="block", dst_ip="10.1.2.3/24", ip_proto=17).dst_ip == "10.1.2.0/24"
    port = parse(action="block", in_port=4)
    assert port.shaped and port.in_port == 4
    assert not parse(action="block", src_mac="00:00:00:00:00:01", in_port=4).shaped


def test_a_shape_may_be_narrowed_to_the_uplink_by_name():
    v = parse(action="rate_limit", dst_ip="10.0.0.2", ip_proto="tcp", dst_port=80, in_port="uplink", rate_pps=100)
    assert v.in_port == "uplink" and v.shaped


def test_a_guard_names_a_port_or_a_mac_seen_there():
    assert parse(action="guard", src_mac="02:AA:00:00:00:01", duration=60) == \
        Verdict("guard", src_mac="02:aa:00:00:00:01", duration=60)
    assert parse(action="guard", in_port=4).in_port == 4


def test_unblock_by_id():
    assert parse(action="unblock", block_id=4).block_id == 4


@pytest.mark.parametrize("doc, status, field", [
    ({"action": "block", "src_ip": "10.0.0.1", "colour": "red"}, 400, "colour"),
    ({"action": "nuke", "src_ip": "10.0.0.1"}, 400, "action"),
    ({"src_ip": "10.0.0.1"}, 400, "action"),
    ({"action": "block", "src_ip": "10.0.0.300"}, 400, "src_ip"),
    ({"action": "block", "src_ip": "fe80::1"}, 400, "src_ip"),
    ({"action": "block", "src_ip": 167772161}, 400, "src_ip"),
    ({"action": "block", "src_mac": "00:11:22:33:44"}, 400, "src_mac"),
    ({"action": "block", "src_mac": "01:00:5e:00:00:01"}, 400, "src_mac"),
    ({"action": "block", "src_ip": "10.0.0.1", "duration": 0}, 400, "duration"),
    ({"action": "block", "src_ip": "10.0.0.1", "duration": 65536}, 400, "duration"),
    ({"action": "block", "src_ip": "10.0.0.1", "duration": "60"}, 400, "duration"),
    ({"action": "block", "src_ip": "10.0.0.1", "duration": True}, 400, "duration"),
    ({"action": "block", "src_ip": "10.0.0.1", "in_port": 2}, 400, "in_port"),
    ({"action": "block", "dst_ip": "10.0.0.0/4"}, 400, "dst_ip"),
    ({"action": "block", "dst_ip": "10.0.0"}, 400, "dst_ip"),
    ({"action": "block", "dst_ip": 5}, 400, "dst_ip"),
    ({"action": "block", "dst_ip": "10.0.0.2", "ip_proto": "sctp"}, 400, "ip_proto"),
    ({"action": "block", "dst_ip": "10.0.0.2", "ip_proto": 300}, 400, "ip_proto"),
    ({"action": "block", "dst_ip": "10.0.0.2", "dst_port": 80}, 400, "dst_port"),
    ({"action": "block", "dst_ip": "10.0.0.2", "ip_proto": 1, "src_port": 80}, 400, "src_port"),
    ({"action": "block", "dst_ip": "10.0.0.2", "ip_proto": 6, "dst_port": 70000}, 400, "dst_port"),
    ({"action": "block", "ip_proto": 6}, 400, "src_ip"),
    ({"action": "rate_limit", "dst_ip": "10.0.0.2"}, 400, "rate_pps"),
    ({"action": "rate_limit", "dst_ip": "10.0.0.2", "rate_pps": 10, "rate_kbps": 10}, 400, "rate_pps"),
    ({"action": "rate_limit", "dst_ip": "10.0.0.2", "rate_pps": 0}, 400, "rate_pps"),
    ({"action": "block", "dst_ip": "10.0.0.2", "rate_kbps": 100}, 400, "rate_kbps"),
    ({"action": "block", "src_mac": "00:00:00:00:00:01", "in_port": 0}, 400, "in_port"),
    ({"action": "block", "src_ip": "10.0.0.1", "src_mac": "00:00:00:00:00:01"}, 400, "src_mac"),
    ({"action": "block"}, 400, "src_ip"),
    ({"action": "block", "src_ip": "10.0.0.1", "block_id": 3}, 400, "block_id"),
    ({"action": "unblock"}, 400, "block_id"),
    ({"action": "unblock", "block_id": 2, "duration": 5}, 400, "duration"),
    ({"action": "block", "src_ip": "10.0.0.1", "reason": "x" * 257}, 400, "reason"),
    ({"action": "block", "src_ip": "10.0.0.1", "source": 5}, 400, "source"),
    ({"action": "guard"}, 400, "in_port"),
    ({"action": "block", "in_port": "uplink"}, 400, "in_port"),                       # the whole uplink
    ({"action": "block", "src_mac": "00:00:00:00:00:01", "in_port": "uplink"}, 400, "in_port"),
    ({"action": "guard", "in_port": "uplink"}, 400, "in_port"),
    ({"action": "block", "dst_ip": "10.0.0.2", "in_port": "lan"}, 400, "in_port"),
    ({"action": "guard", "src_mac": "02:00:00:00:00:01", "dst_ip": "10.0.0.2"}, 400, "dst_ip"),
    ({"action": "guard", "src_ip": "10.0.0.1"}, 400, "src_ip"),
    ({"action": "guard", "in_port": 3, "ip_proto": 6}, 400, "ip_proto"),
    ({"action": "guard", "in_port": 3, "rate_pps": 10}, 400, "rate_pps"),
])
def test_bad_verdicts_name_the_field(doc, status, field):
    with pytest.raises(VerdictError) as err:
        parse(**doc)
    assert (err.value.status, err.value.field) == (status, field)
    assert err.value.as_json()["error"]["field"] == field


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"\xff\xfe", b'"block"', b"null"])
def test_bodies_that_are_not_json_objects(body):
    with pytest.raises(VerdictError) as err:
        parse_verdict(body)
    assert err.value.status == 400


def test_allowlist_covers_addresses_networks_and_macs():
    allow = Allowlist(["10.0.0.254", "192.168.10.0/24", "00:00:00:00:00:FD"])
    assert allow.covers(Verdict("block", src_ip="10.0.0.254")) == "10.0.0.254/32"
    assert allow.covers(Verdict("block", src_ip="192.168.10.77")) == "192.168.10.0/24"
    assert allow.covers(Verdict("block", src_mac="00:00:00:00:00:fd")) == "00:00:00:00:00:fd"
    assert allow.covers(Verdict("block", src_ip="10.0.0.1")) is None


def test_allowlist_refuses_garbage():
    with pytest.raises(ValueError, match="neither"):
        Allowlist(["gateway"])


def test_allowlisted_target_is_refused_and_nothing_changes(gateway):
    gateway.learn_all()
    before = [list(t) for t in (gateway.switch.table(0),)]
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("block", src_ip="10.0.0.253", duration=60))
    assert err.value.status == 403
    assert [list(t) for t in (gateway.switch.table(0),)] == before
    assert gateway.core.blocks() == []


def test_unblock_of_nothing_is_404(gateway):
    with pytest.raises(VerdictError) as err:
        gateway.core.apply_verdict(Verdict("unblock", src_ip="10.0.0.9"))
    assert err.value.status == 404
