import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeswitch import FakeClock, FakeSwitch  # noqa: E402

from iadm.sdn.blockstore import BlockStore  # noqa: E402
from iadm.sdn.core import GatewayController  # noqa: E402
from iadm.sdn.verdicts import Allowlist  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"

H1, H2, MON, H3 = 1, 2, 3, 4
MAC = {H1: "00:00:00:00:00:01", H2: "00:00:00:00:00:02", MON: "00:00:00:00:00:fd", H3: "00:00:00:00:00:04"}
IP = {H1: "10.0.0.1", H2: "10.0.0.2", MON: "10.0.0.253", H3: "10.0.0.4"}
DPID = 1


class Gateway:
    """A GatewayController wired to one fake switch (ports 1-4, monitor on 3)."""

    def __init__(self, tmp_path, allowlist=("10.0.0.253",), monitor_port="s1-eth3"):
        self.clock = FakeClock()
        self.switch = FakeSwitch([H1, H2, MON, H3], self.clock)
        self.sent = []
        self.store_path = str(tmp_path / "blocks.sqlite")
        self.core = GatewayController(
            store=BlockStore(self.store_path, clock=self.clock), allowlist=Allowlist(allowlist),
            send=self._send, monitor_port=monitor_port, packet_in_rate=100, clock=self.clock)
        self.ports = {f"s1-eth{p}": p for p in (H1, H2, MON, H3)}
        self.core.switch_connected(DPID, self.ports)

    def _send(self, dpid, ops):
        self.sent.append((dpid, list(ops)))
        self.switch.apply(ops)

    def send_packet(self, in_port, dst_port=None, eth_dst=None, ipv4=True, src_ip=None, eth_src=None):
        """A packet through the fake switch, with the controller learning from its packet-ins."""
        headers = {"eth_src": eth_src or MAC[in_port],
                   "eth_dst": eth_dst or (MAC[dst_port] if dst_port else "ff:ff:ff:ff:ff:ff")}
        if ipv4:
            headers.update(eth_type=0x0800, ipv4_src=src_ip or IP.get(in_port, "10.0.0.99"))
        else:
            headers.update(eth_type=0x0806)
        outputs = self.switch.process(in_port, **headers)
        if "controller" in outputs:
            self.core.packet_in(DPID, in_port, headers["eth_src"], headers["eth_dst"])
        return outputs

    def learn_all(self):
        for port in (H1, H2, MON, H3):
            self.send_packet(port)


@pytest.fixture
def gateway(tmp_path):
    return Gateway(tmp_path)
