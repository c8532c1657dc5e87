"""pcap and pcapng files, read in chunks into batches.

pcap: both byte orders, micro- and nanosecond magic. pcapng: section header
byte order, interface descriptions (link type, if_tsresol), enhanced, simple
and obsolete packet blocks; other blocks are skipped. A record or block that
runs past the end of the file, or a length that cannot be right, raises
CaptureError naming the file and the byte offset, after every batch before
it was handed out: nothing read before the damage is lost.
"""
from __future__ import annotations

import struct

import numpy as np

from iadm.capture.batch import SUPPORTED_LINKTYPES, Batch, CaptureError, whole_microseconds
from iadm.capture.walk import walk_records

CHUNK = 8 << 20
MAX_FRAME = 256 * 1024  # larger than any snap length in use; a bigger record is corruption

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1), b"\xa1\xb2\xc3\xd4": (">", 1),          # fraction: microseconds
    b"\x4d\x3c\xb2\xa1": ("<", 1000), b"\xa1\xb2\x3c\x4d": (">", 1000),    # nanoseconds
}
_PCAPNG_SHB = 0x0A0D0D0A


def _batch(data: bytes, offsets, caplen, wirelen, ts, linktypes) -> Batch:
    return Batch(np.frombuffer(data, dtype=np.uint8), np.array(offsets, dtype=np.int64),
                 np.array(caplen, dtype=np.int64), np.array(wirelen, dtype=np.int64),
                 np.array(ts, dtype=np.float64), np.array(linktypes, dtype=np.int32))


def _check_linktype(path, linktype, where):
    if linktype not in SUPPORTED_LINKTYPES:
        raise CaptureError(f"{path}: link type {linktype} at byte {where} is not supported "
                           f"(supported: {', '.join(f'{k} {v}' for k, v in SUPPORTED_LINKTYPES.items())})")


def read_pcap(path: str, chunk: int = CHUNK, progress=None):
    """Batches of a pcap or pcapng file; progress(bytes_read) is called as the file is read."""
    with open(path, "rb") as fh:
        if progress is not None:
            fh = _Progress(fh, progress)
        head = fh.read(24)
        if len(head) < 4:
            raise CaptureError(f"{path}: empty or too short to be a capture ({len(head)} bytes)")
        if head[:4] in _PCAP_MAGICS:
            yield from _read_classic(path, fh, head, chunk)
        elif struct.unpack("<I", head[:4])[0] == _PCAPNG_SHB:
            fh.seek(0)
            yield from _read_pcapng(path, fh, chunk)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng file (magic {head[:4].hex()})")


def _read_classic(path, fh, head, chunk):
    if len(head) < 24:
        raise CaptureError(f"{path}: pcap file header is cut short ({len(head)} of 24 bytes)")
    order, per_us = _PCAP_MAGICS[head[:4]]
    linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
    _check_linktype(path, linktype, 20)
    chunks = _chunks(path, fh, chunk, start=24, what="record")
    data, file_pos = next(chunks)
    while True:
        # The length chain is the one sequential part: compiled (iadm.capture.walk).
        buf = np.frombuffer(data, dtype=np.uint8)
        starts, sec, frac, incl, orig, pos, bad = walk_records(buf, order == ">", MAX_FRAME)
        if len(starts):
            yield Batch(buf, starts + 16, incl, orig, whole_microseconds(sec, frac // per_us),
                        np.full(len(starts), linktype, dtype=np.int32))
        if bad >= 0:
            incl = struct.unpack_from(order + "I", data, bad + 8)[0]
            raise CaptureError(f"{path}: record at byte {file_pos + bad} claims {incl} captured bytes "
                               f"(limit {MAX_FRAME}): the file is corrupt from here")
        try:
            data, file_pos = chunks.send(pos)
        except StopIteration:
            return


def _chunks(path: str, fh, chunk: int, start: int, what: str):
    """Yield (bytes, file offset of its first byte); the caller sends back how many it used.

    What is left over is carried into the next chunk; at the end of the file a
    leftover is a truncated record or block, reported with its offset.
    """
    data, file_pos = b"", start
    while True:
        more = fh.read(chunk)
        data = data + more if data else more
        used = yield data, file_pos
        if not more:
            if used < len(data):
                raise CaptureError(f"{path}: truncated {what} at byte {file_pos + used}: "
                                   f"{len(data) - used} bytes left, the {what} needs more")
            return
        file_pos += used
        data = data[used:]


def _read_pcapng(path, fh, chunk):
    order = "<"
    interfaces = []          # (linktype, ticks per second)
    chunks = _chunks(path, fh, chunk, start=0, what="block")
    data, file_pos = next(chunks)
    while True:
        n = len(data)
        pos = 0
        offsets, caplen, wirelen, ts, links = [], [], [], [], []
        while pos + 12 <= n:
            btype = struct.unpack_from(order + "I", data, pos)[0]
            if btype == _PCAPNG_SHB:
                magic = data[pos + 8:pos + 12]
                if len(magic) < 4:
                    break
                order = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">" if magic == b"\x1a\x2b\x3c\x4d" else None
                if order is None:
                    raise CaptureError(f"{path}: section header at byte {file_pos + pos} has a bad "
                                       f"byte-order magic {magic.hex()}")
                interfaces = []
            blen = struct.unpack_from(order + "I", data, pos + 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_FRAME + 1024 * 64:
                yield _batch(data, offsets, caplen, wirelen, ts, links)
                raise CaptureError(f"{path}: block at byte {file_pos + pos} has an impossible length {blen}")
            if pos + blen > n:
                break
            if btype == 1:  # interface description
                linktype = struct.unpack_from(order + "H", data, pos + 8)[0]
                _check_linktype(path, linktype, file_pos + pos)
                interfaces.append((linktype, _tsresol(data, pos, blen, order)))
            elif btype in (6, 2):  # enhanced / obsolete packet block
                if btype == 6:
                    iface, hi, lo, incl, orig = struct.unpack_from(order + "IIIII", data, pos + 8)
                else:
                    iface, _drops, hi, lo, incl, orig = struct.unpack_from(order + "HHIIII", data, pos + 8)
                if iface >= len(interfaces) or 28 + incl > blen:
                    yield _batch(data, offsets, caplen, wirelen, ts, links)
                    raise CaptureError(f"{path}: packet block at byte {file_pos + pos} names interface {iface} "
                                       f"of {len(interfaces)} or overruns its block ({incl} bytes)")
                linktype, per_second = interfaces[iface]
                offsets.append(pos + 28)
                caplen.append(incl)
                wirelen.append(orig)
                ts.append(((hi << 32) | lo) * 1_000_000 // per_second / 1e6)   # whole microseconds
                links.append(linktype)
            elif btype == 3:  # simple packet block: no timestamp, interface 0
                if not interfaces:
                    raise CaptureError(f"{path}: simple packet block at byte {file_pos + pos} before any interface")
                orig = struct.unpack_from(order + "I", data, pos + 8)[0]
                offsets.append(pos + 12)
                caplen.append(min(orig, blen - 16))
                wirelen.append(orig)
                ts.append(ts[-1] if ts else 0.0)
                links.append(interfaces[0][0])
            pos += blen
        if offsets:
            yield _batch(data, offsets, caplen, wirelen, ts, links)
        try:
            data, file_pos = chunks.send(pos)
        except StopIteration:
            return


def _tsresol(data, pos, blen, order) -> int:
    """Timestamp ticks per second from an interface block's if_tsresol option (default microseconds)."""
    opt = pos + 16
    end = pos + blen - 4
    while opt + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, opt)
        if code == 0:
            break
        if code == 9 and length >= 1:
            value = data[opt + 4]
            return 2 ** (value & 0x7F) if value & 0x80 else 10 ** value
        opt += 4 + ((length + 3) & ~3)
    return 1_000_000


class _Progress:
    """A file wrapper that reports how far reading has got."""

    def __init__(self, fh, callback):
        self.fh = fh
        self.callback = callback

    def read(self, size=-1):
        data = self.fh.read(size)
        self.callback(self.fh.tell())
        return data

    def seek(self, pos):
        return self.fh.seek(pos)
