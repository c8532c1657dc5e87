"""The publisher's on-disk spool: append-only segment files, a cursor, a bound on the bytes kept.

Every event goes through the spool before Redis (write-ahead), so events wait here in their order
while Redis is slow or absent and a restarted gateway resends what it had not delivered. Layout in
the spool directory: segments `0000000001.jsonl`, ... (one encoded event per line) and `cursor`
("SEGMENT OFFSET" of the first event not yet confirmed by Redis, replaced atomically).

fsync policy: appends are single write() calls (a crash of the process loses nothing the kernel
has); the segment is fsynced at most once per `fsync_seconds` and when it is closed or rotated,
so a power loss loses at most that many seconds of events (the alert log still has them).
Bound: when the segments exceed max_bytes the oldest one is deleted, counted in `dropped`, and
logged: a Redis down for longer than the spool holds costs the oldest events, never the gateway.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time

log = logging.getLogger("iadm.fleet")
SEGMENTS = 16   # max_bytes is spread over this many segments, so dropping one frees 1/16


class SpoolBusy(RuntimeError):
    pass


class Spool:
    def __init__(self, directory: str, max_bytes: int, fsync_seconds: float = 1.0):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, max_bytes // SEGMENTS)
        self.fsync_seconds = fsync_seconds
        self.dropped = 0
        os.makedirs(directory, exist_ok=True)
        # one writer per spool: two processes appending and moving one cursor would lose events
        self._lock = open(os.path.join(directory, "lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SpoolBusy(f"fleet spool {directory} is in use by another process; give each process its "
                            "own (fleet.spool)") from None
        self._segments = sorted(int(n[:-6]) for n in os.listdir(directory) if n.endswith(".jsonl")
                                and n[:-6].isdigit())
        if not self._segments:
            self._segments = [1]
        self._sizes = {s: self._size(s) for s in self._segments}
        self._out = open(self._path(self._segments[-1]), "ab", buffering=0)
        self._synced = time.monotonic()
        self._read_segment, self._read_offset = self._load_cursor()
        self._in = None

    # --- layout -----------------------------------------------------------------------
    def _path(self, segment: int) -> str:
        return os.path.join(self.directory, f"{segment:010d}.jsonl")

    def _size(self, segment: int) -> int:
        try:
            return os.path.getsize(self._path(segment))
        except FileNotFoundError:
            return 0

    def _load_cursor(self) -> tuple[int, int]:
        path = os.path.join(self.directory, "cursor")
        try:
            with open(path) as fh:
                segment, offset = (int(x) for x in fh.read().split())
        except FileNotFoundError:
            return self._segments[0], 0
        except ValueError:
            log.error("%s: damaged cursor; resending the spool from its oldest event (the collector "
                      "stores each event once)", path)
            return self._segments[0], 0
        if segment < self._segments[0]:
            return self._segments[0], 0
        return segment, offset

    def _save_cursor(self) -> None:
        path = os.path.join(self.directory, "cursor")
        with open(path + ".tmp", "w") as fh:
            fh.write(f"{self._read_segment} {self._read_offset}\n")
        os.replace(path + ".tmp", path)

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    # --- writing ----------------------------------------------------------------------
    def append(self, lines: list[bytes]) -> None:
        """Encoded events, each without a newline, in order."""
        data = b"".join(line + b"\n" for line in lines)
        segment = self._segments[-1]
        if self._sizes[segment] and self._sizes[segment] + len(data) > self.segment_bytes:
            segment = self._rotate()
        self._out.write(data)
        self._sizes[segment] += len(data)
        if time.monotonic() - self._synced >= self.fsync_seconds:
            self.sync()
        while len(self._segments) > 1 and self.bytes > self.max_bytes:
            self._drop_oldest()

    def _rotate(self) -> int:
        self.sync()
        self._out.close()
        segment = self._segments[-1] + 1
        self._segments.append(segment)
        self._sizes[segment] = 0
        self._out = open(self._path(segment), "ab", buffering=0)
        return segment

    def _drop_oldest(self) -> None:
        oldest = self._segments.pop(0)
        if self._read_segment <= oldest:
            lost = self._count_lines(oldest, self._read_offset if self._read_segment == oldest else 0)
            self.dropped += lost
            log.error("fleet spool %s over %d bytes: %d undelivered event(s) of segment %d dropped (they are in "
                      "the alert log)", self.directory, self.max_bytes, lost, oldest)
            self._read_segment, self._read_offset = self._segments[0], 0
            if self._in is not None:
                self._in.close()
                self._in = None
            self._save_cursor()
        del self._sizes[oldest]
        os.unlink(self._path(oldest))

    def _count_lines(self, segment: int, offset: int) -> int:
        with open(self._path(segment), "rb") as fh:
            fh.seek(offset)
            return fh.read().count(b"\n")

    def sync(self) -> None:
        os.fsync(self._out.fileno())
        self._synced = time.monotonic()

    # --- reading ----------------------------------------------------------------------
    def peek(self, limit: int) -> list[bytes]:
        """Up to `limit` undelivered events, oldest first, without consuming them (commit() does)."""
        lines = []
        segment, offset = self._read_segment, self._read_offset
        self._pending = []
        while len(lines) < limit:
            if self._in is None or self._in_segment != segment:
                if self._in is not None:
                    self._in.close()
                self._in = open(self._path(segment), "rb")
                self._in_segment = segment
            self._in.seek(offset)
            while len(lines) < limit:
                line = self._in.readline()
                if not line.endswith(b"\n"):
                    break   # the end, or a line being written
                offset += len(line)
                lines.append(line[:-1])
                self._pending.append((segment, offset))
            if len(lines) >= limit or segment == self._segments[-1]:
                break
            later = [s for s in self._segments if s > segment]
            segment, offset = later[0], 0
        return lines

    def commit(self, count: int) -> None:
        """The first `count` events of the last peek() were delivered."""
        if count <= 0:
            return
        self._read_segment, self._read_offset = self._pending[count - 1]
        self._pending = self._pending[count:]
        self._save_cursor()
        # Delivered segments other than the one being written are no longer needed.
        while self._segments[0] < self._read_segment:
            oldest = self._segments.pop(0)
            del self._sizes[oldest]
            os.unlink(self._path(oldest))

    def undelivered(self) -> int:
        total = 0
        for segment in self._segments:
            if segment >= self._read_segment:
                total += self._count_lines(segment, self._read_offset if segment == self._read_segment else 0)
        return total

    def close(self) -> None:
        self.sync()
        self._out.close()
        if self._in is not None:
            self._in.close()
        self._lock.close()
