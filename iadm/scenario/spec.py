"""Scenario files (TOML): the benign background and the attack windows, checked key by key.

    name = "demo"
    duration = 40                 # seconds of the whole run
    devices = 1                   # extra IoT devices d1.. besides Host1
    attackers = 3                 # attacker hosts a1..

    [background]
    devices = ["h1", "d1"]        # hosts running the IoT device role against Host2
    scale = 1.0                   # rate multiplier of every benign service

    [[attack]]
    kind = "syn-flood"            # see KINDS
    hosts = ["a1"]                # who attacks (several: a DDoS)
    target = "h2"
    start = 6                     # seconds after the background started
    duration = 4
    rate = 20000                  # packets/s (floods), probes/s (scans), bytes/s (upload), writes/s (trickle)
    spoof = true                  # floods: forge a random IPv4 source per packet
    spoof_as = "10.0.0.253"       # floods: forge this one source instead (an allowlisted host's)
    port = 22                     # the target's service port (default from the kind)
    victim = "d3"                 # arp-spoof: the host whose ARP cache is poisoned (target: the address claimed)
    qtype = "NULL"                # dns-tunnel: NULL or TXT queries
    connections = 100             # slow-http: connections held open at once
    # category, subcategory, technique: default from the kind (DDoS when several hosts)

The kinds added for the attacks IoT gateways meet most (issue 15), each a bounded generator in
scripts/traffic/ against a listener the runner starts on the target:
    ssh-guess, telnet-guess   many short sessions to a banner-and-reject listener on port 22 / 23
    arp-spoof                 forged ARP replies from the attacker's own MAC: to `victim`, "target's
                              address is at me", and to the target, "victim's address is at me"
    dns-tunnel                queries with long base32 labels under one domain, NULL/TXT, to a tiny
                              UDP responder on the target's port 53 (the outside resolver)
    slow-http                 connections to the target's web server, held open with partial headers
    icmp-flood                echo requests at a bounded rate

Through the uplink (issue 11): `uplink = true` adds the router r1 (10.0.0.254, the last switch
port, named openflow.uplink_port in the controller's config) and the outside client o1
(198.51.100.10) behind it; o1 may run the device role in [background]. Attacks with hosts = ["r1"]
come from the Internet side, their sources forged outside the LAN:
    reflection                UDP answers from a pool of `sources` reflectors in 203.0.113.0/24,
                              from the reflectors' service port `port` (161 SNMP by default, 123 NTP,
                              ...) to random ports of the target, `payload` bytes each
    syn-flood (spoof = true)  SYN from random addresses of 198.18.0.0/15 to the target's `port`
    shaped_rate_pps = 200     the monitor's verdicts.shaped_rate_pps for this run (default: its own)
    shaped_links = {h2 = 8000}  the switch's port toward h2 shaped to 8,000 kbit/s (tbf, a 100 ms queue):
                              a slow device link, whose queue and delay a flood fills (issue 21)
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from iadm.config import ConfigError, read_toml

# kind: (category, subcategory, default rate, the unit of rate, technique an alert should name)
KINDS = {
    "syn-flood": ("DoS", "TCP", 20000, "packets/s", "syn_flood"),
    "hping3-syn": ("DoS", "TCP", 5000, "packets/s", "syn_flood"),
    "udp-flood": ("DoS", "UDP", 20000, "packets/s", "udp_flood"),
    "http-flood": ("DoS", "HTTP", 300, "connections/s", "http_flood"),
    "service-scan": ("Reconnaissance", "Service_Scan", 1000, "probes/s", "port_scan"),
    "os-fingerprint": ("Reconnaissance", "OS_Fingerprint", 200, "probes/s", "os_fingerprint"),
    "exfiltration": ("Theft", "Data_Exfiltration", 4_000_000, "bytes/s", "exfiltration"),
    "keylogging": ("Theft", "Keylogging", 2, "writes/s", ""),
    "ssh-guess": ("Theft", "BruteForce", 4, "sessions/s", "brute_force"),
    "telnet-guess": ("Theft", "BruteForce", 4, "sessions/s", "brute_force"),
    "arp-spoof": ("Theft", "ARP_Spoofing", 2, "forged pairs/s", "arp_spoofing"),
    "dns-tunnel": ("Theft", "Tunnel", 10, "queries/s", "dns_tunnel"),
    "slow-http": ("DoS", "HTTP", 50, "connections opened/s", "slow_http"),
    "icmp-flood": ("DoS", "ICMP", 2000, "packets/s", "icmp_flood"),
    "reflection": ("DDoS", "UDP", 10000, "packets/s", "reflection"),
}
UPLINK_ONLY = {"reflection"}   # kinds sent from the Internet side (hosts = ["r1"]) only
REFLECTORS, FORGED_OUTSIDE = "203.0.113.0/24", "198.18.0.0/15"   # see topology/gateway.py DISCARDED
# The listener a kind needs on its target, and its default port (started by the runner).
SERVICE_PORTS = {"ssh-guess": 22, "telnet-guess": 23, "dns-tunnel": 53, "slow-http": 80}
# Kinds the monitor cannot block by design (none yet); the demo requires them detected and named.
UNBLOCKABLE: dict = {}
FLOODS = ("syn-flood", "hping3-syn", "udp-flood", "http-flood")
HOST_IPS = {"h1": 1, "h2": 2, "monitor": 253, "r1": 254}
OUTSIDE_CLIENT, OUTSIDE_CLIENT_MAC = "198.51.100.10", "00:00:00:00:01:0a"   # o1, behind r1


def host_ip(name: str) -> str:
    if name == "o1":
        return OUTSIDE_CLIENT
    if name in HOST_IPS:
        return f"10.0.0.{HOST_IPS[name]}"
    if name[:1] in ("d", "a") and name[1:].isdigit():
        return f"10.0.0.{(10 if name[0] == 'd' else 100) + int(name[1:])}"
    raise ValueError(f"no host {name!r} in the topology (h1, h2, monitor, d1.., a1.., r1, o1)")


def host_mac(name: str) -> str:
    if name == "o1":
        return OUTSIDE_CLIENT_MAC
    return "00:00:00:00:00:%02x" % int(host_ip(name).rsplit(".", 1)[1])


@dataclass
class Attack:
    kind: str
    hosts: list
    target: str
    start: float
    duration: float
    rate: float
    spoof: bool = False
    spoof_as: str = ""
    bytes: int = 8_000_000
    port: int = 0
    category: str = ""
    subcategory: str = ""
    technique: str = ""
    victim: str = ""
    qtype: str = "NULL"
    connections: int = 100
    sources: int = 200      # reflection: how many reflectors
    payload: int = 468      # reflection: bytes of each answer's UDP payload

    @property
    def uplink(self) -> bool:
        """Sent from the Internet side: every packet carries r1's MAC, the sources are outside."""
        return self.hosts == ["r1"]

    @property
    def src_net(self) -> str:
        """The prefix an uplink attack's sources are forged in ("" for a LAN attack)."""
        if not self.uplink:
            return ""
        return REFLECTORS if self.kind == "reflection" else FORGED_OUTSIDE if self.spoof else ""

    @property
    def name(self) -> str:
        who = "+".join(self.hosts)
        if self.uplink and self.src_net:
            return f"{self.kind} {self.src_net}@r1->{self.target}"
        forged = f" (as {self.spoof_as})" if self.spoof_as else " (spoofed)" if self.spoof else ""
        return f"{self.kind}{forged} {who}->{self.target}"


@dataclass
class Scenario:
    name: str
    duration: float
    devices: int = 1
    attackers: int = 1
    background_devices: list = field(default_factory=lambda: ["h1"])
    scale: float = 1.0
    attacks: list = field(default_factory=list)
    path: str = ""
    uplink: bool = False          # r1 (the uplink router) and o1 (an outside client) in the topology
    shaped_rate_pps: int = 0      # the monitor's verdicts.shaped_rate_pps for the run (0: its default)
    # host -> kbit/s: the switch's port toward that host shaped by a token bucket (tbf) with a
    # queue of QUEUE_MS, as a gateway's slow device link; a flood fills it, and delay grows
    shaped_links: dict = field(default_factory=dict)


QUEUE_MS = 100   # how long a shaped link's queue may hold a packet before it drops


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _get(doc: dict, key: str, types, where: str, default=None, check=None):
    if key not in doc:
        if default is None:
            raise ConfigError(f"{where}: {key} is required")
        return default
    value = doc[key]
    if isinstance(value, bool) != (types is bool) or not isinstance(value, types) or (check and not check(value)):
        raise ConfigError(f"{where}: {key} has a bad value {value!r}")
    return value


def load_scenario(path: str) -> Scenario:
    doc = read_toml(path)
    unknown = set(doc) - {"name", "duration", "devices", "attackers", "background", "attack", "uplink",
                          "shaped_rate_pps", "shaped_links"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    number = (int, float)
    sc = Scenario(name=_get(doc, "name", str, path), path=path,
                  duration=_get(doc, "duration", number, path, check=lambda v: 0 < v <= 600),
                  devices=_get(doc, "devices", int, path, 1, lambda v: 0 <= v <= 5),
                  attackers=_get(doc, "attackers", int, path, 1, lambda v: 0 <= v <= 20),
                  uplink=_get(doc, "uplink", bool, path, False),
                  shaped_rate_pps=_get(doc, "shaped_rate_pps", int, path, 0, lambda v: 0 <= v <= 1_000_000))
    background = doc.get("background", {})
    sc.background_devices = _get(background, "devices", list, f"{path}: [background]", ["h1"])
    sc.scale = _get(background, "scale", number, f"{path}: [background]", 1.0, lambda v: 0 < v <= 20)
    hosts = {"h1", "h2"} | {f"d{i}" for i in range(1, sc.devices + 1)} | {f"a{i}" for i in range(1, sc.attackers + 1)}
    if sc.uplink:
        hosts |= {"r1", "o1"}
    links = _get(doc, "shaped_links", dict, path, {})
    for name, kbit in links.items():
        if name not in hosts - {"r1", "o1"} or isinstance(kbit, bool) or not isinstance(kbit, int) \
                or not 64 <= kbit <= 1_000_000:
            raise ConfigError(f"{path}: shaped_links: {name} = {kbit!r}: a LAN host and 64-1,000,000 kbit/s")
    sc.shaped_links = dict(links)
    for name in sc.background_devices:
        if name not in hosts - {"h2", "r1"}:
            raise ConfigError(f"{path}: [background] devices: no device host {name!r}")
    for n, a in enumerate(doc.get("attack", []), 1):
        where = f"{path}: attack {n}"
        extra = set(a) - {"kind", "hosts", "target", "start", "duration", "rate", "spoof", "spoof_as", "bytes", "port",
                          "category", "subcategory", "technique", "victim", "qtype", "connections", "sources",
                          "payload"}
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        kind = _get(a, "kind", str, where)
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r}: expected one of {', '.join(KINDS)}")
        category, subcategory, rate, _, technique = KINDS[kind]
        attack_hosts = _get(a, "hosts", list, where)
        for h in attack_hosts + [_get(a, "target", str, where)]:
            if h not in hosts:
                raise ConfigError(f"{where}: no host {h!r} in this topology ({', '.join(sorted(hosts))})")
        attack = Attack(kind=kind, hosts=attack_hosts, target=a["target"],
                        start=_get(a, "start", number, where, check=lambda v: 0 <= v < sc.duration),
                        duration=_get(a, "duration", number, where, check=lambda v: 0 < v <= 120),
                        rate=_get(a, "rate", number, where, rate, lambda v: v > 0),
                        spoof=_get(a, "spoof", bool, where, False),
                        spoof_as=_get(a, "spoof_as", str, where, "", _is_ipv4),
                        bytes=_get(a, "bytes", int, where, 8_000_000, lambda v: 0 < v <= 100_000_000),
                        port=_get(a, "port", int, where, 0, lambda v: 0 <= v <= 65535),
                        qtype=_get(a, "qtype", str, where, "NULL", lambda v: v in ("NULL", "TXT")),
                        connections=_get(a, "connections", int, where, 100, lambda v: 0 < v <= 1000),
                        sources=_get(a, "sources", int, where, 200, lambda v: 0 < v <= 65536),
                        payload=_get(a, "payload", int, where, 468, lambda v: 0 <= v <= 1400))
        attack.technique = _get(a, "technique", str, where, technique)
        if "r1" in attack_hosts and attack_hosts != ["r1"]:
            raise ConfigError(f"{where}: r1 (the uplink router) attacks alone")
        if "o1" in attack_hosts + [attack.target] or attack.target == "r1":
            raise ConfigError(f"{where}: o1 and r1 are the Internet side: o1 is a benign client, r1 only sends floods")
        if attack.uplink and kind not in UPLINK_ONLY | {"syn-flood", "udp-flood"}:
            raise ConfigError(f"{where}: from r1 (the uplink) only reflection, syn-flood and udp-flood")
        if kind in UPLINK_ONLY and not attack.uplink:
            raise ConfigError(f"{where}: {kind} comes through the uplink: hosts = [\"r1\"] (and uplink = true)")
        if attack.uplink and kind != "reflection" and not attack.spoof:
            raise ConfigError(f"{where}: a flood from r1 forges outside sources: spoof = true")
        if attack.uplink and attack.spoof_as:
            raise ConfigError(f"{where}: from r1 the sources are forged outside (spoof = true), not spoof_as")
        if kind == "arp-spoof":
            attack.victim = _get(a, "victim", str, where)
            if attack.victim not in hosts or attack.victim in attack_hosts + [attack.target]:
                raise ConfigError(f"{where}: victim {attack.victim!r}: a host of this topology other than the "
                                  f"attacker and the target")
        elif "victim" in a:
            raise ConfigError(f"{where}: victim is only for arp-spoof")
        if kind in SERVICE_PORTS and attack.target in attack_hosts:
            raise ConfigError(f"{where}: {kind} needs a target other than its attacker")
        if kind == "slow-http" and (attack.target != "h2" or attack.port not in (0, 80)):
            raise ConfigError(f"{where}: slow-http is aimed at Host2's web server (target h2, port 80)")
        if kind == "dns-tunnel" and attack.target == "h2" and attack.port in (0, 53):
            raise ConfigError(f"{where}: h2 answers DNS for the background already; the tunnel's resolver is "
                              f"another host")
        attack.category = _get(a, "category", str, where, "DDoS" if category == "DoS" and
                               (len(attack_hosts) > 1 or attack.src_net) else category)
        attack.subcategory = _get(a, "subcategory", str, where, subcategory)
        if attack.start + attack.duration > sc.duration:
            raise ConfigError(f"{where}: ends at {attack.start + attack.duration}s, after the run ({sc.duration}s)")
        sc.attacks.append(attack)
    return sc
