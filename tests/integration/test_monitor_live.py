"""`iadm monitor` on the monitor host's mirror port, live, over the TPACKET_V3 ring."""
import sys
import time

import pandas as pd
from labtools import ping


def test_live_monitor_turns_mirrored_traffic_into_records(lab):
    _, net, workdir = lab
    h1, h2, monitor = net.get("h1", "h2", "monitor")
    ping(h1, "10.0.0.2", count=1)  # learned: the rest is forwarded and mirrored once
    records = workdir / "live-records.csv"
    proc = monitor.popen([sys.executable, "-m", "iadm.cli", "monitor", "--iface", "monitor-eth0",
                          "--records", str(records), "--duration", "6", "--status-interval", "1"])
    time.sleep(1.5)
    server = h2.popen([sys.executable, "-m", "http.server", "8002", "--bind", "10.0.0.2"])
    try:
        time.sleep(1)
        assert ping(h1, "10.0.0.2", count=5) == 5
        h1.cmd(f"{sys.executable} -c \"import urllib.request;urllib.request.urlopen('http://10.0.0.2:8002/',"
               f"timeout=5).read()\"")
    finally:
        server.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"packets" in err  # the status line
    frame = pd.read_csv(records)
    icmp = frame[(frame.proto == "icmp") & (frame.saddr == "10.0.0.1") & (frame.daddr == "10.0.0.2")]
    last = icmp.sort_values("seq").groupby("sport").tail(1)
    assert (last.state == "ECO").all()
    assert last.spkts.max() == 5 and last.dpkts.max() == 5   # each echo seen once: mirror, not duplicates
    tcp = frame[(frame.proto == "tcp") & (frame.dport == 8002)]
    assert len(tcp) >= 1
    final = tcp.sort_values("seq").iloc[-1]
    assert final.saddr == "10.0.0.1" and final.state in ("FIN", "CON", "RST") and final.dpkts > 0
    assert (frame.smac.dropna() != "").all()
