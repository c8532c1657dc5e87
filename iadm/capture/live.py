"""Live capture: AF_PACKET with a TPACKET_V3 memory-mapped ring.

The kernel fills whole blocks of frames and hands them over in one go, so
the Python side wakes once per block, not per packet. A block is retired to
user space when full or after `block_timeout_ms`: that bounds how late a
packet can reach the flow table on a quiet link (libpcap's default of a
second is too slow for a verdict). Frames this host sends itself are left
out: the monitor watches the mirror, not its own traffic.

Batches point into the ring; `blocks()` returns a block to the kernel only
after the consumer has processed the batch built from it.
"""
from __future__ import annotations

import mmap
import select
import socket
import struct

import numpy as np

from iadm.capture.batch import LINKTYPE_ETHERNET, Batch, CaptureError

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V3 = 2
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
TP_STATUS_USER = 1

_BLOCK_HEADER = struct.Struct("=IIIIII")    # version, offset_to_priv, status, num_pkts, first, blk_len
_FRAME_HEADER = struct.Struct("=IIIIIIHH")  # next, sec, nsec, snaplen, len, status, mac, net
_SLL_PKTTYPE = 48 + 10                      # sockaddr_ll after the 48-byte tpacket3_hdr


class LiveCapture:
    def __init__(self, iface: str, block_size: int = 1 << 20, blocks: int = 64, frame_size: int = 2048,
                 block_timeout_ms: int = 20, promiscuous: bool = True):
        self.iface = iface
        self.block_size = block_size
        self.block_count = blocks
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureError(f"{iface}: live capture needs root (CAP_NET_RAW)") from None
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            req = struct.pack("=IIIIIII", block_size, blocks, frame_size, block_size * blocks // frame_size,
                              block_timeout_ms, 0, 0)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.sock.bind((iface, ETH_P_ALL))
            if promiscuous:
                ifindex = socket.if_nametoindex(iface)
                self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                                     struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
            self.ring = mmap.mmap(self.sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            self.sock.close()
            raise CaptureError(f"{iface}: cannot open a TPACKET_V3 ring: {exc.strerror or exc}") from None
        self.buf = np.frombuffer(self.ring, dtype=np.uint8)
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        self.next_block = 0
        self.kernel_packets = 0
        self.kernel_drops = 0

    def blocks(self, timeout_ms: int = 200):
        """Yield one Batch per block the kernel has retired; stops yielding after an idle timeout."""
        while True:
            base = self.next_block * self.block_size
            _, _, status, count, first, _ = _BLOCK_HEADER.unpack_from(self.ring, base)
            if not status & TP_STATUS_USER:
                if not self.poller.poll(timeout_ms):
                    return
                continue
            batch = self._batch(base, count, first)
            try:
                yield batch
            finally:
                # Give the block back: the kernel may now overwrite what the batch pointed at.
                struct.pack_into("=I", self.ring, base + 8, 0)
                self.next_block = (self.next_block + 1) % self.block_count

    def _batch(self, base: int, count: int, first: int) -> Batch:
        offsets, caplen, wirelen, ts = [], [], [], []
        pos = base + first
        ring = self.ring
        for _ in range(count):
            nxt, sec, nsec, snap, length, _status, mac, _net = _FRAME_HEADER.unpack_from(ring, pos)
            if ring[pos + _SLL_PKTTYPE] != PACKET_OUTGOING:
                offsets.append(pos + mac)
                caplen.append(snap)
                wirelen.append(length)
                ts.append((sec * 1_000_000 + nsec // 1000) / 1e6)   # whole microseconds, as files
            pos += nxt
        n = len(offsets)
        return Batch(self.buf, np.array(offsets, dtype=np.int64), np.array(caplen, dtype=np.int64),
                     np.array(wirelen, dtype=np.int64), np.array(ts, dtype=np.float64),
                     np.full(n, LINKTYPE_ETHERNET, dtype=np.int32))

    def stats(self) -> dict:
        """Kernel counters since the start (the kernel resets them on every read)."""
        received, dropped, _freeze = struct.unpack("=III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        self.kernel_packets += received
        self.kernel_drops += dropped
        return {"kernel_packets": self.kernel_packets, "kernel_drops": self.kernel_drops}

    def close(self) -> None:
        self.sock.close()
        del self.buf
        try:
            self.ring.close()
        except BufferError:
            pass  # a batch still views the ring; the mapping goes with its last reference
