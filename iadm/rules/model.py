"""What a parsed rule is: header, options, and the address/port sets it matches."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

ACTIONS = ("alert", "drop", "pass")
PROTOCOLS = ("ip", "tcp", "udp", "icmp")
OPERATORS = (">=", "<=", "==", "!=", ">", "<")
# Our classtypes and the Bot-IoT category/subcategory a hit labels a flow with.
CLASSTYPES = {
    "dos": ("DoS", None), "ddos": ("DDoS", None),
    "service-scan": ("Reconnaissance", "Service_Scan"), "os-fingerprint": ("Reconnaissance", "OS_Fingerprint"),
    "data-exfiltration": ("Theft", "Data_Exfiltration"), "keylogging": ("Theft", "Keylogging"),
    "policy": ("Normal", "Normal"), "misc-attack": ("Attack", None),
}
TCP_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


class RuleError(ValueError):
    """A rule-file error: where (file, line, column), the token, and what was expected."""

    def __init__(self, path: str, line: int, col: int, token: str, message: str):
        super().__init__(f"{path}:{line}:{col}: {message} (at {token!r})" if token else
                         f"{path}:{line}:{col}: {message}")
        self.path, self.line, self.col, self.token, self.message = path, line, col, token, message


@dataclass(frozen=True)
class AddressSet:
    """Networks a value must be in (any of; empty = any) and must not be in."""
    include: tuple = ()
    exclude: tuple = ()

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        inside = not self.include or any(ip in net for net in self.include)
        return inside and not any(ip in net for net in self.exclude)


@dataclass(frozen=True)
class PortSet:
    """Inclusive port ranges a value must be in (any of; empty = any) and must not be in."""
    include: tuple = ()
    exclude: tuple = ()

    def contains(self, port: int) -> bool:
        inside = not self.include or any(lo <= port <= hi for lo, hi in self.include)
        return inside and not any(lo <= port <= hi for lo, hi in self.exclude)


@dataclass(frozen=True)
class Predicate:
    feature: str
    op: str
    value: float


@dataclass(frozen=True)
class Threshold:
    """threshold (type limit|threshold|both) or detection_filter, per source or destination address."""
    kind: str          # "limit", "threshold", "both" or "detection_filter"
    track: str         # "by_src" or "by_dst"
    count: int
    seconds: float


@dataclass
class Rule:
    action: str
    proto: str
    src: AddressSet
    sport: PortSet
    direction: str
    dst: AddressSet
    dport: PortSet
    sid: int = 0                    # 0: none given
    msg: str = ""
    rev: int = 1
    classtype: str = ""
    priority: int = 3
    references: list = field(default_factory=list)
    metadata: list = field(default_factory=list)
    predicates: list = field(default_factory=list)
    flags: tuple | None = None      # (mode, bits): mode "exact", "all" (+) or "any" (*)
    threshold: Threshold | None = None
    path: str = ""
    line: int = 0
    text: str = ""

    @property
    def category(self) -> str | None:
        return CLASSTYPES.get(self.classtype, (None, None))[0]

    @property
    def subcategory(self) -> str | None:
        """From the classtype; for DoS/DDoS from `metadata: subcategory HTTP` or the protocol (TCP, UDP)."""
        fixed = CLASSTYPES.get(self.classtype, (None, None))[1]
        if fixed:
            return fixed
        for item in self.metadata:
            key, _, value = item.partition(" ")
            if key == "subcategory" and value:
                return value.strip()
        return self.proto.upper() if self.category in ("DoS", "DDoS") else None

    def meta(self, key: str) -> str:
        """The value of `metadata: KEY VALUE` ("" when absent)."""
        for item in self.metadata:
            name, _, value = item.partition(" ")
            if name == key:
                return value.strip()
        return ""

    @property
    def technique(self) -> str:
        """What the rule detects beyond Bot-IoT's category (metadata: technique syn_flood)."""
        return self.meta("technique")

    @property
    def mitre(self) -> str:
        """Its MITRE ATT&CK technique id (metadata: mitre_technique_id T1498.001), as ET rules carry it."""
        return self.meta("mitre_technique_id")

    @property
    def packet_level(self) -> bool:
        """Header and flags only: can be evaluated on single packets."""
        return not self.predicates
