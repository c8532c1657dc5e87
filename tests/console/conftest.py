"""A real monitor with its console, fed by a replayed capture, verdicts to a real verdict API
(iadm.sdn.api.VerdictServer over the controller's core and a fake switch, tests/fakeswitch.py)."""
import dataclasses
import io
import socket
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from fakeswitch import H3, Gateway  # noqa: E402
from pcaptools import write_pcap  # noqa: E402

from iadm.config import MonitorConfig  # noqa: E402
from iadm.sdn.api import VerdictServer  # noqa: E402
from iadm.sdn.client import VerdictClient  # noqa: E402
from iadm.synth import ATTACKER, ATTACKER_MAC, attacks, benign  # noqa: E402

TOKEN = "console-test-token"
T0 = 1_700_000_000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    gateway = Gateway(tmp)
    gateway.learn_all()
    gateway.send_packet(H3, eth_src=ATTACKER_MAC, src_ip=ATTACKER)   # the switch knows the attacker's port
    verdicts = VerdictServer(("127.0.0.1", 0), gateway.core, TOKEN)
    threading.Thread(target=lambda: verdicts.serve_forever(poll_interval=0.05), daemon=True).start()
    client = VerdictClient(f"http://127.0.0.1:{verdicts.server_address[1]}", TOKEN)
    flood, _ = attacks(T0 + 5)
    packets = sorted(benign(T0, 30, devices=3) + flood[6000:14000])
    pcap = tmp / "attack.pcap"
    write_pcap(pcap, packets)
    from iadm.detection.compose import build_monitor
    config = dataclasses.replace(
        MonitorConfig(), alert_log=str(tmp / "alerts.json"), zscore_db=str(tmp / "zscore.sqlite"),
        console_store=str(tmp / "alerts.sqlite"), api_port=free_port(), api_token=TOKEN, gateway_id="gw-test")
    monitor = build_monitor(config, replay=True, client=client)
    monitor.run({"pcap": str(pcap)}, status_every=1e9, stream=io.StringIO())
    yield {"token": TOKEN, "monitor": monitor, "client": client, "url": f"http://127.0.0.1:{config.api_port}",
           "config": config, "tmp": tmp}
    monitor.close()
    verdicts.shutdown()
    verdicts.server_close()
