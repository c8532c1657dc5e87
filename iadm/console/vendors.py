"""A device's vendor from its MAC's OUI, by netaddr's copy of the IEEE registry (maintained, offline)."""
from __future__ import annotations

import functools
import re

import netaddr

_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


@functools.lru_cache(maxsize=4096)
def vendor(mac: str) -> str:
    """The registered organisation of the MAC's OUI; "" for an address that is no MAC, a locally
    administered MAC (randomised phones, VMs, Mininet) or an OUI the registry does not list."""
    if not isinstance(mac, str) or not _MAC.match(mac):   # netaddr would read "10.0.0.1" as a number
        return ""
    try:
        eui = netaddr.EUI(mac)
    except (netaddr.AddrFormatError, TypeError, ValueError):
        return ""
    if int(eui) >> 40 & 0x02:   # the locally administered bit: no vendor owns it
        return ""
    try:
        return eui.oui.registration().org
    except netaddr.NotRegisteredError:
        return ""
