"""Packet inspectors: attacks seen in packet contents that flow records do not carry.

Each watcher is stateful and is called on every batch with the batch and its decoded columns:
`watcher(batch, decoded) -> list[Finding]`. They read header bytes from batch.buf at
Decoded.l4 and keep their own small state across batches (docs/inspectors.md).
"""
from iadm.inspect.arp import ArpWatch
from iadm.inspect.dns import DnsWatch
from iadm.inspect.finding import SIDS, Finding
from iadm.inspect.icmptunnel import IcmpTunnelWatch
from iadm.inspect.logins import LoginFailureWatch
from iadm.inspect.macs import MacFloodWatch

__all__ = ["ArpWatch", "DnsWatch", "Finding", "IcmpTunnelWatch", "LoginFailureWatch", "MacFloodWatch", "SIDS", "warm_up"]


def warm_up() -> float:
    """Run crafted packets through every watcher so that their compiled kernels are loaded (from
    numba's cache, or compiled the very first time) before a live capture starts; returns seconds."""
    import dataclasses
    import struct
    import time

    from iadm.capture.batch import Batch
    from iadm.capture.decode import decode
    from iadm.synth import frame
    start = time.monotonic()
    mac = bytes.fromhex("020000000001")
    arp = (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac
           + bytes([10, 0, 0, 1]) + b"\x00" * 6 + bytes([10, 0, 0, 2]))
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"
    dns = bytearray(frame("10.0.0.2", "10.0.0.1", 17, 40000, 53, payload=len(query)))
    dns[42:] = query
    frames = [arp, bytes(dns), frame("10.0.0.2", "10.0.0.1", 17, 40001, 53, payload=3)]
    batch = Batch.from_frames(frames, [1_000_000.0 + 0.01 * i for i in range(len(frames))])
    # a read-only buffer (bytes) and a writable one (the live ring's) are two types to numba
    for buffered in (batch, dataclasses.replace(batch, buf=batch.buf.copy())):
        decoded = decode(buffered)
        for watcher in (ArpWatch(), MacFloodWatch(), DnsWatch(), LoginFailureWatch(), IcmpTunnelWatch()):
            watcher(buffered, decoded)
    return time.monotonic() - start
