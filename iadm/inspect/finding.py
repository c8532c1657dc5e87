"""What a packet inspector reports: one finding per condition met, in the alert's terms.

A finding is not an alert yet: the detection path turns it into one (EVE shape, alert.metadata
carrying technique and mitre_technique_id) and the responder decides what to do with it.
`block` says the evidence is strong enough to mitigate on this finding alone; who is mitigated
and how is the responder's business (an ARP spoofer by its MAC, a MAC flood per switch port).

Signature ids: the block 2100000-2199999 is the inspectors' own (21000xx ARP, 21001xx MAC
floods, 21002xx DNS, 21003xx logins, 21004xx ICMP tunnels) (rules/ ship 1000000-1999999);
one sid per condition, listed in SIDS with its one-line signature.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# ATT&CK technique ids.
MITRE_ARP = "T1557.002"       # Adversary-in-the-Middle: ARP Cache Poisoning
MITRE_ARP_SWEEP = "T1018"     # Remote System Discovery: which addresses answer on the LAN
# A MAC flood exhausts the switch's forwarding (CAM) table, a resource of the network itself, until
# it fails open and floods every frame: Network Denial of Service (T1498) rather than Endpoint Denial
# of Service (T1499), which is about exhausting a host's OS, service or application.
MITRE_MAC_FLOOD = "T1498"
MITRE_BRUTE_FORCE = "T1110.001"   # Brute Force: Password Guessing
# An ICMP tunnel carries its data in a protocol below the application layer
MITRE_ICMP_TUNNEL = "T1095"   # Non-Application Layer Protocol
MITRE_DNS = "T1071.004"       # Application Layer Protocol: DNS (data and C2 carried in DNS names)
# Raw data on UDP port 53 that is not DNS at all uses the port, not the protocol: exfiltration over
# a channel other than the C2 protocol, Exfiltration Over Alternative Protocol.
MITRE_DNS_RAW = "T1048"

SIDS = {
    2100001: "ARP: an address bound to an active host claimed by another MAC",
    2100002: "ARP: unsolicited reply claiming the gateway's address",
    2100003: "ARP: one MAC claims several addresses in unsolicited replies",
    2100004: "ARP: sender MAC differs from the Ethernet source",
    2100005: "ARP: two MACs answer for one address",
    2100006: "ARP sweep: one MAC asks for many addresses of the LAN",
    2100101: "MAC flood: many new source MACs in a short window",
    2100201: "DNS tunnel: query names carrying bytes no host name has",
    2100202: "DNS tunnel: long, high-entropy labels under one domain",
    2100203: "DNS tunnel: many unique encoded-looking names under one domain",
    2100204: "DNS tunnel: TXT/NULL/MX/CNAME/ANY-heavy queries to unique names under one domain",
    2100205: "DNS tunnel: NULL-type queries",
    2100206: "DNS tunnel: non-DNS payloads on UDP port 53",
    2100401: "ICMP tunnel: echo replies that do not return their request's data",
    2100402: "ICMP tunnel: echo messages of many sizes carrying much data",
    2100403: "ICMP tunnel: a stream of echo replies nobody asked for, to a host that asks",
    2100301: "FTP password guessing: the server refused logins of one client again and again (530)",
    2100302: "Refused logins with one password again and again: a client configured wrongly (no guessing)",
    2100303: "MQTT password guessing: the broker refused one client's CONNECTs again and again",
    2100304: "HTTP password guessing: 401 to one client again and again, with many passwords",
    2100501: "Delay: a device's delay out of its own history (z-score)",
}


@dataclass
class Finding:
    ts: float                    # capture time of the packet that completed the evidence
    technique: str               # arp_spoofing, arp_sweep, mac_flood, dns_tunnel, brute_force
    mitre: str                   # ATT&CK technique id
    category: str                # Bot-IoT category (Theft, DoS, ...)
    subcategory: str             # ARP_Spoofing, MAC_Flood, Tunnel
    sid: int
    signature: str
    src_mac: int = 0             # the actor's MAC (the spoofer, the tunnelling client's frames), 0 if none
    src_ip: str = ""             # the actor's address, "" when there is none to name
    dest_ip: str = ""
    proto: str = ""              # arp, eth, udp, tcp
    src_port: int | None = None
    dest_port: int | None = None
    evidence: dict = field(default_factory=dict)
    severity: int = 2            # 1 high .. 3 low, as Suricata's
    block: bool = False
    # A port-wide mitigation (a MAC flood: no one source to block): a MAC the attack sent from its
    # ingress port, by which the controller finds that port to guard; 0 for a finding about a source.
    ingress_mac: int = 0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["src_mac"] = format_mac(self.src_mac) if self.src_mac else ""
        out["ingress_mac"] = format_mac(self.ingress_mac) if self.ingress_mac else ""
        return out


def format_mac(mac: int) -> str:
    return ":".join(f"{(int(mac) >> s) & 0xFF:02x}" for s in range(40, -8, -8))
