"""A batch of captured frames: one byte buffer and per-frame columns.

Sources (files, the AF_PACKET ring) fill batches; the decoder reads them
with numpy gathers, so no per-packet Python object is ever made.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP", LINKTYPE_LINUX_SLL: "Linux cooked",
                       LINKTYPE_IPV4: "raw IPv4", LINKTYPE_IPV6: "raw IPv6", LINKTYPE_LINUX_SLL2: "Linux cooked v2"}


def whole_microseconds(seconds, microseconds) -> np.ndarray:
    """Timestamps kept to the microsecond, as Argus keeps them (a finer clock is truncated by
    the caller): the float64 nearest each whole microsecond, so that every record's times and
    durations are exact microseconds (float64 epoch seconds resolve only a quarter of one)."""
    return (np.asarray(seconds, dtype=np.int64) * 1_000_000 + np.asarray(microseconds, dtype=np.int64)) / 1e6


class CaptureError(RuntimeError):
    """A capture that cannot be read further; the message names the source and the byte offset."""


@dataclass
class Batch:
    buf: np.ndarray          # uint8: the bytes the offsets point into
    offsets: np.ndarray      # int64: start of each frame in buf
    caplen: np.ndarray       # int64: bytes captured
    wirelen: np.ndarray      # int64: bytes on the wire
    ts: np.ndarray           # float64: seconds since the epoch
    linktype: np.ndarray     # int32: per frame (pcapng interfaces may differ)

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def from_frames(cls, frames, timestamps=None, linktype: int = LINKTYPE_ETHERNET, wirelen=None) -> "Batch":
        """A batch from a list of byte strings (tests, generators)."""
        frames = [bytes(f) for f in frames]
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames):
            offsets[1:] = np.cumsum(lengths)[:-1]
        ts = np.arange(len(frames), dtype=np.float64) * 1e-3 if timestamps is None else np.asarray(
            timestamps, dtype=np.float64)
        return cls(np.frombuffer(b"".join(frames) or b"\0", dtype=np.uint8), offsets, lengths,
                   lengths.copy() if wirelen is None else np.asarray(wirelen, dtype=np.int64), ts,
                   np.full(len(frames), linktype, dtype=np.int32))
