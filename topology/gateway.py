"""The reference test scenario: an IoT gateway's OVS bridge under a remote controller.

    Host1 (IoT device, 10.0.0.1) ─┐
    Host2 (server,     10.0.0.2) ─┼─ s1 (OVS, userspace datapath, OpenFlow 1.3) ── remote controller
    monitor (mirror,   10.0.0.253)┤        port 3 = s1-eth3: the mirror port
    d1.. extra devices 10.0.0.11..│
    a1.. attackers     10.0.0.101..┤
    r1 (uplink router, 10.0.0.254)┘  optional (uplink=1): its switch port comes last
       └── o1 (outside client, 198.51.100.10), on r1's far side, not on the switch

With the uplink, the LAN hosts route everything off 10.0.0.0/24 through r1 (10.0.0.254), and r1
routes 198.51.100.0/24 (its far side, where o1 lives) and discards what it gets for the other
outside prefixes the generators forge (203.0.113.0/24 reflectors, 198.18.0.0/15 forged SYN
sources): documentation and benchmarking prefixes that exist only inside these namespaces. The
bridge is never attached to a real interface: nothing leaves the topology.

From the command line (Debian's mn; only Mininet is imported here):

    mn --custom topology/gateway.py --topo iadm,devices=1,attackers=1[,uplink=1] \
       --controller remote,ip=127.0.0.1,port=6653

From Python: iadm.testbed.gateway_network(), which also cleans up after a crash.

Self-contained on purpose: Debian's `mn` runs it with the system Python.
"""
from mininet.node import Host, OVSSwitch
from mininet.topo import Topo

SWITCH = "s1"
MONITOR_PORT = "s1-eth3"
ROUTER_IP, ROUTER_MAC_LAST = "10.0.0.254", 254
OUTSIDE_NET, OUTSIDE_ROUTER, OUTSIDE_CLIENT = "198.51.100.0/24", "198.51.100.1", "198.51.100.10"
DISCARDED = ("203.0.113.0/24", "198.18.0.0/15")   # forged/reflector sources: answers to them end at r1


def mac(n):
    return "00:00:00:00:00:%02x" % n


class OffloadOffHost(Host):
    """A host with transmit checksum offload off.

    The userspace datapath (there is no openvswitch kernel module here) passes
    veth packets with unfilled TCP/UDP checksums, which the receiver drops.
    """

    def config(self, gateway=None, **params):
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd("ethtool -K %s tx off >/dev/null 2>&1" % intf.name)
        if gateway:   # the uplink router, for everything off the host's own subnet
            self.cmd("ip route replace default via %s" % gateway)
        return result


class Router(OffloadOffHost):
    """r1: the upstream router. Its first interface is on the switch (10.0.0.254), its second
    faces the outside client o1; it forwards between them, and answers to the forged and
    reflector prefixes go to a blackhole route (silently, no ICMP back into the LAN)."""

    def config(self, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1")
        far = "%s-eth1" % self.name
        self.cmd("ip addr add %s/24 dev %s; ip link set %s up" % (OUTSIDE_ROUTER, far, far))
        for prefix in DISCARDED:
            self.cmd("ip route add blackhole %s" % prefix)
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
    """Host1, Host2 and the monitor on ports 1-3, then `devices` IoT devices and `attackers`;
    with `uplink`, the router r1 on the last port and the outside client o1 behind it."""

    def build(self, devices=0, attackers=0, uplink=False):
        uplink = str(uplink).lower() in ("1", "true", "yes")
        s1 = self.addSwitch(SWITCH, cls=UserspaceOVS, dpid="0000000000000001")
        hosts = [("h1", 1, 1), ("h2", 2, 2), ("monitor", 253, 253)]
        hosts += [("d%d" % i, 10 + i, 10 + i) for i in range(1, int(devices) + 1)]
        hosts += [("a%d" % i, 100 + i, 100 + i) for i in range(1, int(attackers) + 1)]
        for name, ip_last, mac_last in hosts:
            host = self.addHost(name, cls=OffloadOffHost, ip="10.0.0.%d/24" % ip_last, mac=mac(mac_last),
                                gateway=ROUTER_IP if uplink and name != "monitor" else None)
            self.addLink(host, s1)
        if uplink:
            r1 = self.addHost("r1", cls=Router, ip="%s/24" % ROUTER_IP, mac=mac(ROUTER_MAC_LAST))
            self.addLink(r1, s1)   # r1-eth0: the uplink port, s1-eth<last>
            o1 = self.addHost("o1", cls=OffloadOffHost, ip="%s/24" % OUTSIDE_CLIENT, mac="00:00:00:00:01:0a",
                              gateway=OUTSIDE_ROUTER)
            self.addLink(o1, r1)   # o1-eth0 <-> r1-eth1: outside the bridge


def uplink_port(devices=0, attackers=0):
    """The switch port r1 hangs on: after Host1, Host2, the monitor, the devices and the attackers."""
    return "%s-eth%d" % (SWITCH, 4 + int(devices) + int(attackers))


topos = {"iadm": GatewayTopo}
