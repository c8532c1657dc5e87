"""The gateway controller on real OVS + Mininet, the controller as its own process."""
import hashlib
import sys
import time

import pytest
from labtools import flow_packets, ping

from iadm.sdn.client import ApiError

H1_IP, H2_IP = "10.0.0.1", "10.0.0.2"


@pytest.fixture(autouse=True)
def no_blocks_left(lab):
    yield
    controller = lab[0]
    if controller.proc.poll() is None:
        for block in controller.client().blocks():
            controller.client().verdict(action="unblock", block_id=block["block_id"])


def test_hosts_ping_and_transfer_over_tcp(lab):
    _, net, workdir = lab
    h1, h2 = net.get("h1", "h2")
    assert ping(h1, H2_IP) == 3
    assert ping(h2, H1_IP) == 3
    payload = workdir / "www" / "firmware.bin"
    payload.parent.mkdir(exist_ok=True)
    payload.write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    server = h2.popen([sys.executable, "-m", "http.server", "8000", "--bind", H2_IP,
                       "--directory", str(payload.parent)])
    try:
        time.sleep(1)
        out = h1.cmd(f"{sys.executable} -c \"import urllib.request,hashlib;"
                     f"print(hashlib.sha256(urllib.request.urlopen('http://{H2_IP}:8000/firmware.bin',"
                     f"timeout=10).read()).hexdigest())\"")
    finally:
        server.terminate()
        server.wait()
    assert out.strip().splitlines()[-1] == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_monitor_sees_mirrored_icmp_and_tcp_once(lab):
    from scapy.all import ICMP, IP, TCP, rdpcap
    _, net, workdir = lab
    h1, h2, monitor = net.get("h1", "h2", "monitor")
    ping(h1, H2_IP, count=1)  # everyone learned: no flooding in what follows
    capture = workdir / "mirror.pcap"
    tcpdump = monitor.popen(["tcpdump", "-n", "-U", "--immediate-mode", "-i", "monitor-eth0", "-w", str(capture)])
    time.sleep(1.5)
    server = h2.popen([sys.executable, "-m", "http.server", "8001", "--bind", H2_IP])
    try:
        time.sleep(1)
        assert ping(h1, H2_IP, count=4) == 4
        h1.cmd(f"{sys.executable} -c \"import urllib.request;urllib.request.urlopen('http://{H2_IP}:8001/',"
               f"timeout=5).read()\"")
        time.sleep(0.5)
    finally:
        server.terminate()
        tcpdump.terminate()
        tcpdump.wait()
    packets = rdpcap(str(capture))
    requests = [p for p in packets if ICMP in p and p[ICMP].type == 8 and p[IP].src == H1_IP]
    replies = [p for p in packets if ICMP in p and p[ICMP].type == 0 and p[IP].src == H2_IP]
    assert (len(requests), len(replies)) == (4, 4)  # each mirrored exactly once
    syns = [p for p in packets if TCP in p and p[TCP].dport == 8001 and p[TCP].flags == "S"]
    assert len(syns) == 1
    assert any(TCP in p and p[TCP].sport == 8001 and len(p[TCP].payload) > 0 for p in packets)


def test_verdict_blocks_host1_and_unblock_restores_it(lab):
    controller, net, _ = lab
    h1, switch = net.get("h1", "s1")
    assert ping(h1, H2_IP) == 3
    doc = controller.client().verdict(action="block", src_ip=H1_IP, duration=120, reason="test")
    assert doc["block"]["match"]["ipv4_src"] == H1_IP
    assert ping(h1, H2_IP) == 0
    assert flow_packets(switch, f"table=0,ip,nw_src={H1_IP}")[0] >= 3
    controller.client().verdict(action="unblock", block_id=doc["block"]["block_id"])
    assert flow_packets(switch, f"table=0,ip,nw_src={H1_IP}") == []
    assert ping(h1, H2_IP) == 3


def test_block_with_short_timeout_expires_by_itself(lab):
    controller, net, _ = lab
    h1, switch = net.get("h1", "s1")
    controller.client().verdict(action="block", src_ip=H1_IP, duration=2)
    assert ping(h1, H2_IP, count=2) == 0
    time.sleep(2.5)
    assert flow_packets(switch, f"table=0,ip,nw_src={H1_IP}") == []
    assert ping(h1, H2_IP) == 3
    assert controller.client().blocks() == []


def test_block_survives_controller_kill_and_flow_table_loss(lab):
    controller, net, _ = lab
    h1, switch = net.get("h1", "s1")
    controller.client().verdict(action="block", src_ip=H1_IP, duration=300)
    controller.kill()
    # Wipe the switch so that only the controller's store can bring the block back.
    switch.cmd("ovs-ofctl -O OpenFlow13 del-flows s1")
    assert flow_packets(switch, "table=0") == []
    controller.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not flow_packets(switch, f"table=0,ip,nw_src={H1_IP}"):
        time.sleep(0.2)
    assert flow_packets(switch, f"table=0,ip,nw_src={H1_IP}") != []
    assert ping(h1, H2_IP) == 0
    h2 = net.get("h2")
    assert ping(h2, "10.0.0.253") == 3  # the rest of the pipeline came back too
    [block] = controller.client().blocks()
    assert 290 <= block["remaining_seconds"] <= 300


def test_request_without_token_is_refused_and_changes_nothing(lab):
    controller, net, _ = lab
    h1, switch = net.get("h1", "s1")
    before = switch.cmd("ovs-ofctl -O OpenFlow13 dump-flows s1 table=0 --no-stats")
    for token in ("", "not-the-token"):
        with pytest.raises(ApiError) as err:
            controller.client(token=token).verdict(action="block", src_ip=H1_IP, duration=60)
        assert err.value.status == 401
    assert switch.cmd("ovs-ofctl -O OpenFlow13 dump-flows s1 table=0 --no-stats") == before
    assert controller.client().blocks() == []
    assert ping(h1, H2_IP) == 3


def test_allowlisted_monitor_cannot_be_blocked(lab):
    controller, net, _ = lab
    with pytest.raises(ApiError) as err:
        controller.client().verdict(action="block", src_ip="10.0.0.253", duration=60)
    assert err.value.status == 403
    assert ping(net.get("h1"), "10.0.0.253") == 3
