"""Shared blocks: what a controller tells the fleet, and what it does with what others tell it. Pure.

A block this gateway decides against one outside IPv4 source (a global address, not allowlisted)
is published as an offer; a MAC, port or shape block is never offered (MACs and ports are local,
and shapes name this site's own hosts). Another gateway applies an offer by its own policy
(`fleet.shared_blocks`): off, alert (a counting mark), or block for `shared_block_seconds`; never
for an address in its allowlist, never for a non-global address (its own LAN space), and an
offer can only name an IPv4 source, so it never touches the uplink port or the router's MAC.
A revocation (an unblock at the origin, or feedback "not_attack") withdraws the shared block
wherever it was applied; a block this gateway decided itself is left alone.
"""
from __future__ import annotations

import ipaddress

from iadm.sdn.verdicts import Allowlist, Verdict

FLEET_SOURCE = "fleet:"   # prefix of the source of a block applied from another gateway's offer
POLICIES = ("off", "alert", "block")


def is_outside(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.IPv4Address(address).is_global
    except ValueError:
        return False


def offerable(verdict: Verdict, allowlist: Allowlist) -> bool:
    """A block decided here that the fleet may share: one outside source, nothing narrower or local."""
    return (verdict.action == "block" and is_outside(verdict.src_ip) and verdict.src_mac is None
            and verdict.in_port is None and verdict.dst_ip is None and verdict.ip_proto is None
            and not verdict.source.startswith(FLEET_SOURCE) and allowlist.covers(verdict) is None)


def mitigation_event(action: str, block: dict, verdict: Verdict, offer: bool, installed_on: list) -> dict:
    return {"event_type": "mitigation", "src_ip": verdict.src_ip,
            "mitigation": {"action": action, "block_id": block["block_id"], "match": block["match"],
                           "seconds": block.get("remaining_seconds"), "reason": verdict.reason, "source": verdict.source,
                           "offer": offer, "installed_on": installed_on}}


def unblock_event(blocks: list, removed_on: list) -> dict:
    """An unblock; it revokes the offers of the blocks among them that were offered (outside sources
    decided here)."""
    sources = sorted({b.match["ipv4_src"] for b in blocks if "ipv4_src" in b.match})
    revoked = sorted({b.match["ipv4_src"] for b in blocks if set(b.match) == {"eth_type", "ipv4_src"}
                      and is_outside(b.match["ipv4_src"]) and not b.source.startswith(FLEET_SOURCE)})
    return {"event_type": "unblock", "src_ip": sources[0] if len(sources) == 1 else None,
            "unblock": {"block_ids": [b.block_id for b in blocks], "src_ips": sources, "revoke": bool(revoked),
                        "revoked": revoked, "removed_on": removed_on}}


def decide(event: dict, own_host: str, policy: str, allowlist: Allowlist, seconds: int):
    """What to do with one event from the offers stream:
    ("apply", Verdict) | ("revoke", [src_ip, ...]) | ("ignore", why)."""
    host = event.get("host")
    if host == own_host:
        return "ignore", "our own"
    if policy == "off":
        return "ignore", "fleet.shared_blocks is off"
    kind = event.get("event_type")
    if kind == "unblock":
        revoked = [a for a in (event.get("unblock") or {}).get("revoked") or () if isinstance(a, str)]
        return ("revoke", revoked) if revoked else ("ignore", "nothing revoked")
    if kind == "feedback":
        feedback = event.get("feedback") or {}
        if feedback.get("verdict") == "not_attack" and isinstance(event.get("src_ip"), str):
            return "revoke", [event["src_ip"]]
        return "ignore", "not a revocation"
    mitigation = event.get("mitigation") or {}
    if kind != "mitigation" or not mitigation.get("offer"):
        return "ignore", "not an offer"
    src_ip = event.get("src_ip")
    if not is_outside(src_ip):
        return "ignore", f"{src_ip!r} is not an outside IPv4 address (our LAN space or not an address)"
    verdict = Verdict("alert" if policy == "alert" else "block", src_ip=src_ip, duration=seconds,
                      reason=f"shared by {host}: {str(mitigation.get('reason', ''))[:200]}",
                      source=f"{FLEET_SOURCE}{host}"[:128])
    protected = allowlist.covers(verdict)
    if protected:
        return "ignore", f"{src_ip} is allowlisted here ({protected})"
    return "apply", verdict
