"""Shared blocks: offers from one gateway's controller applied by another's policy, over real Redis."""
import pytest
from fakeswitch import H1, H2, Gateway

from iadm.config import FleetConfig
from iadm.fleet.localservers import LocalRedis
from iadm.fleet.publisher import publisher, redis_client
from iadm.sdn import sharing
from iadm.sdn.fleetlink import OfferFollower
from iadm.sdn.verdicts import Allowlist, Verdict

OUTSIDE = "45.33.32.156"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with LocalRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _gateway(tmp_path, name, redis_server, key, policy, allowlist=("10.0.0.253",)):
    (tmp_path / name).mkdir()
    gw = Gateway(tmp_path / name, allowlist=allowlist)
    config = FleetConfig(enabled=True, redis_port=redis_server.port, key=key, spool=str(tmp_path / name / "spool"),
                         spool_max_bytes=1 << 20, shared_blocks=policy, shared_block_seconds=900)
    gw.core.events = publisher(config, name, offers=True)
    gw.core.gateway_id, gw.core.shared_blocks, gw.core.shared_block_seconds = name, policy, 900
    gw.follower = OfferFollower(redis_client(config), key, gw.core.apply_shared, block_ms=200)
    gw.follower.poll()          # starts at the stream's end, as a controller does
    return gw


def _drops(gw, src_ip):
    gw.learn_all()
    return gw.send_packet(H1, dst_port=H2, src_ip=src_ip) == []


@pytest.fixture
def pair(tmp_path, redis_server, request):
    key = f"iadm:share:{request.node.name}"
    a = _gateway(tmp_path, "gw-a", redis_server, key, "block")
    b = _gateway(tmp_path, "gw-b", redis_server, key, getattr(request, "param", "block"),
                 allowlist=("10.0.0.253", "8.8.8.8"))
    yield a, b
    for gw in (a, b):
        gw.core.events.close()


def _exchange(a, b):
    assert a.core.events.flush()
    b.follower.poll()


def test_a_block_of_an_outside_source_at_a_is_applied_at_b_and_revoked_by_the_unblock(pair):
    a, b = pair
    _, doc = a.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=60, reason="SSH brute force"))
    _exchange(a, b)
    [shared] = b.core.blocks()
    assert shared["source"] == "fleet:gw-a" and shared["action"] == "block"
    assert shared["remaining_seconds"] == 900 and "SSH brute force" in shared["reason"]
    assert _drops(b, OUTSIDE) and not _drops(b, "45.33.32.157")
    a.core.apply_verdict(Verdict("unblock", block_id=doc["block"]["block_id"]))
    _exchange(a, b)
    assert b.core.blocks() == [] and not _drops(b, OUTSIDE)


def test_b_never_shares_back_what_it_applied(pair):
    a, b = pair
    a.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=60))
    _exchange(a, b)
    _exchange(b, a)
    assert len(a.core.blocks()) == 1 and a.core.blocks()[0]["source"] == ""


@pytest.mark.parametrize("pair", ["alert"], indirect=True)
def test_policy_alert_marks_and_forwards(pair):
    a, b = pair
    a.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=60))
    _exchange(a, b)
    assert [x["action"] for x in b.core.blocks()] == ["alert"] and not _drops(b, OUTSIDE)


@pytest.mark.parametrize("pair", ["off"], indirect=True)
def test_policy_off_applies_nothing(pair):
    a, b = pair
    a.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=60))
    _exchange(a, b)
    assert b.core.blocks() == []


def test_lan_allowlisted_and_narrow_blocks_are_not_shared_or_applied(pair):
    a, b = pair
    a.core.apply_verdict(Verdict("block", src_ip="10.0.0.9", duration=60))          # LAN space
    a.core.apply_verdict(Verdict("block", src_ip="8.8.8.8", duration=60))           # allowlisted at B
    a.core.apply_verdict(Verdict("block", src_ip="45.33.32.1", dst_ip="10.0.0.2", duration=60))   # a shape
    a.core.apply_verdict(Verdict("block", src_mac="00:00:00:00:00:01", duration=60))
    _exchange(a, b)
    assert b.core.blocks() == []
    assert b.follower.counts["events"] == 1         # only 8.8.8.8 was offered; B refused it


def test_b_keeps_its_own_block_when_a_revokes(pair):
    a, b = pair
    b.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=300, source="rule:1"))
    _, doc = a.core.apply_verdict(Verdict("block", src_ip=OUTSIDE, duration=60))
    _exchange(a, b)
    a.core.apply_verdict(Verdict("unblock", block_id=doc["block"]["block_id"]))
    _exchange(a, b)
    assert [x["source"] for x in b.core.blocks()] == ["rule:1"]


def test_decide_refuses_what_the_policy_forbids():
    allow = Allowlist(["203.0.113.0/24"])
    offer = {"host": "a", "event_type": "mitigation", "src_ip": OUTSIDE, "mitigation": {"offer": True}}
    assert sharing.decide(offer, "a", "block", allow, 60)[0] == "ignore"             # our own
    assert sharing.decide({**offer, "src_ip": "192.168.1.4"}, "b", "block", allow, 60)[0] == "ignore"
    assert sharing.decide({**offer, "src_ip": "not-an-ip"}, "b", "block", allow, 60)[0] == "ignore"
    what, verdict = sharing.decide(offer, "b", "block", allow, 60)
    assert what == "apply" and (verdict.action, verdict.duration, verdict.source) == ("block", 60, "fleet:a")
    feedback = {"host": "a", "event_type": "feedback", "src_ip": OUTSIDE, "feedback": {"verdict": "not_attack"}}
    assert sharing.decide(feedback, "b", "block", allow, 60) == ("revoke", [OUTSIDE])


def test_the_controller_publishes_health_and_mitigations(pair, redis_server):
    import json
    a, _ = pair
    a.core.switch_disconnected(1)
    a.core.switch_connected(1, a.ports)
    a.core.apply_verdict(Verdict("block", src_mac="00:00:00:00:00:01", duration=60))
    assert a.core.events.flush()
    events = [json.loads(f[b"eve"]) for _, f in redis_server.client().xrange(a.follower.key[:-len(":offers")])]
    assert [(e["event_type"], e.get("health", {}).get("state")) for e in events] == [
        ("health", "disconnected"), ("health", "connected"), ("mitigation", None)]
    assert events[2]["mitigation"]["offer"] is False and events[2]["host"] == "gw-a"


def test_a_controller_config_with_fleet_and_gateway_loads_under_a_bare_manager(tmp_path):
    from iadm.sdn.app import _fleet_link, load_config
    path = tmp_path / "controller.toml"
    path.write_text(f'[gateway]\nid = "gw-x"\n[blocks]\nstore = "{tmp_path}/b.sqlite"\n[api]\ntoken = "t"\n'
                    f'[fleet]\nenabled = true\nshared_blocks = "alert"\nspool = "{tmp_path}/spool"\n')
    config = load_config(environ={"IADM_CONFIG": str(path)})
    assert (config.gateway_id, config.fleet.shared_blocks) == ("gw-x", "alert")
    link = _fleet_link(config)
    try:
        assert (link["gateway_id"], link["shared_blocks"]) == ("gw-x", "alert")
        assert link["events"].offers_key == "iadm:events:offers"
    finally:
        link["events"].close()
