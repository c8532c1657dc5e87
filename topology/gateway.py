"""The reference test scenario: an IoT gateway's OVS bridge under a remote controller.

    Host1 (IoT device, 10.0.0.1) ─┐
    Host2 (server,     10.0.0.2) ─┼─ s1 (OVS, userspace datapath, OpenFlow 1.3) ── remote controller
    monitor (mirror,   10.0.0.253)┤        port 3 = s1-eth3: the mirror port
    d1.. extra devices 10.0.0.11..│
    a1.. attackers     10.0.0.101..┘

From the command line (Debian's mn; only Mininet is imported here):

    mn --custom topology/gateway.py --topo iadm,devices=1,attackers=1 \
       --controller remote,ip=127.0.0.1,port=6653

From Python: iadm.testbed.gateway_network(), which also cleans up after a crash.

Self-contained on purpose: Debian's `mn` runs it with the system Python.
"""
from mininet.node import Host, OVSSwitch
from mininet.topo import Topo

SWITCH = "s1"
MONITOR_PORT = "s1-eth3"


def mac(n):
    return "00:00:00:00:00:%02x" % n


class OffloadOffHost(Host):
    """A host with transmit checksum offload off.

    The userspace datapath (there is no openvswitch kernel module here) passes
    veth packets with unfilled TCP/UDP checksums, which the receiver drops.
    """

    def config(self, **params):
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd("ethtool -K %s tx off >/dev/null 2>&1" % intf.name)
        return result


class UserspaceOVS(OVSSwitch):
    """OVS with the userspace (netdev) datapath, OpenFlow 1.3 only, fail-secure.

    Fail-secure: with the controller gone the switch keeps its flows (and so
    its blocks) instead of turning into an open learning switch.
    """

    def __init__(self, name, **params):
        params.setdefault("datapath", "user")
        params.setdefault("protocols", "OpenFlow13")
        params.setdefault("failMode", "secure")
        super().__init__(name, **params)


class GatewayTopo(Topo):
    """Host1, Host2 and the monitor on ports 1-3, then `devices` IoT devices and `attackers`."""

    def build(self, devices=0, attackers=0):
        s1 = self.addSwitch(SWITCH, cls=UserspaceOVS, dpid="0000000000000001")
        hosts = [("h1", 1, 1), ("h2", 2, 2), ("monitor", 253, 253)]
        hosts += [("d%d" % i, 10 + i, 10 + i) for i in range(1, int(devices) + 1)]
        hosts += [("a%d" % i, 100 + i, 100 + i) for i in range(1, int(attackers) + 1)]
        for name, ip_last, mac_last in hosts:
            host = self.addHost(name, cls=OffloadOffHost, ip="10.0.0.%d/24" % ip_last, mac=mac(mac_last))
            self.addLink(host, s1)


topos = {"iadm": GatewayTopo}
