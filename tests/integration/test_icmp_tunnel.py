"""A real ICMP tunnel: ptunnel-ng between two network namespaces joined by a veth pair (nothing
leaves them), a 200 KB download through it, captured on the client's side; the ICMP tunnel
inspector names the client, to be blocked, within a second of the tunnel's first packet, while
the plain pings of the same two hosts, before the tunnel, are nothing."""
import os
import shutil
import subprocess
import time

import pytest

from iadm.capture.decode import COUNTERS, decode
from iadm.capture.pcapfile import read_pcap
from iadm.inspect import IcmpTunnelWatch

CLIENT, SERVER = "10.98.0.1", "10.98.0.2"


def sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


@pytest.fixture
def namespaces():
    if shutil.which("ptunnel-ng") is None:
        message = "ptunnel-ng is not installed (scripts/setup installs it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    for ns in ("iadm-tc", "iadm-ts"):
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "iadmtc0", "type", "veth", "peer", "name", "iadmts0")
    for ns, dev, addr in (("iadm-tc", "iadmtc0", CLIENT), ("iadm-ts", "iadmts0", SERVER)):
        sh("ip", "link", "set", dev, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    yield
    for ns in ("iadm-tc", "iadm-ts"):
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            sh("kill", pid, check=False)
        sh("ip", "netns", "del", ns, check=False)


def test_ptunnel_download_is_found_and_the_client_named(namespaces, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(200_000))
    run = ["ip", "netns", "exec"]
    procs = [subprocess.Popen(run + ["iadm-ts", "timeout", "40", "python3", "-m", "http.server", "8022", "--bind",
                                     "127.0.0.1", "--directory", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen(run + ["iadm-ts", "timeout", "40", "ptunnel-ng", "-r127.0.0.1", "-R8022", "-v", "-1",
                                     f"-o{tmp_path / 'server.log'}"], stdout=subprocess.DEVNULL)]
    capture = tmp_path / "tunnel.pcap"
    procs.append(subprocess.Popen(run + ["iadm-tc", "timeout", "40", "tcpdump", "-i", "iadmtc0", "-U", "-w",
                                         str(capture), "icmp"], stderr=subprocess.DEVNULL))
    try:
        time.sleep(1.5)
        sh(*run, "iadm-tc", "ping", "-c", "5", "-i", "0.2", SERVER)            # plain pings first
        started = time.time()
        procs.append(subprocess.Popen(run + ["iadm-tc", "timeout", "40", "ptunnel-ng", f"-p{SERVER}", "-l2222",
                                             "-r127.0.0.1", "-R8022", "-v", "-1", f"-o{tmp_path / 'client.log'}"],
                                      stdout=subprocess.DEVNULL))
        time.sleep(1.0)
        fetch = (f"import urllib.request; open({str(tmp_path / 'got')!r}, 'wb').write("
                 "urllib.request.urlopen('http://127.0.0.1:2222/blob', timeout=15).read())")
        got = sh(*run, "iadm-tc", "timeout", "20", "python3", "-c", fetch, check=False)
        assert got.returncode == 0 and (tmp_path / "got").read_bytes() == blob.read_bytes(), "tunnel did not carry"
        time.sleep(0.5)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
    watch = IcmpTunnelWatch()
    found = []
    for batch in read_pcap(str(capture)):
        decoded = decode(batch, dict.fromkeys(COUNTERS, 0))
        found += watch(batch, decoded)
    assert watch.counters["replies_matched"] >= 5 and watch.counters["echo"] > 100
    assert found, watch.counters
    f = found[0]
    assert (f.technique, f.block, f.src_ip, f.dest_ip) == ("icmp_tunnel", True, CLIENT, SERVER)
    assert f.src_mac and f.ts >= started - 0.5        # not the pings before the tunnel
    assert f.ts - started < 2.5, f"found {f.ts - started:.2f} s after the tunnel client started"
