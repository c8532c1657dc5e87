"""The alert log: JSON lines shaped like Suricata's EVE alerts, rotated by size.

One line per verdict. The EVE fields (timestamp, flow_id, src_ip, src_port,
dest_ip, dest_port, proto, alert{action, signature_id, rev, signature,
category, severity}) are there unchanged so a SIEM ingests the file as it
would Suricata's; ours follow them (verdict_source, model, features, the
controller's answer).

Rotation: when the next line would take the file over max_bytes, the file is
renamed LOG.1 (LOG.1 to LOG.2, ...; `keep` files are kept) and a new one is
started. A line is written with one write() call and rotation only happens
between lines, so no line is split or lost; readers follow the rename.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone


def eve_timestamp(ts: float) -> str:
    """Suricata's form: 2026-11-22T11:10:03.123456+0000."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def parse_timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


class AlertLog:
    """The file, and the sinks that take each event after it is written (the console's alert store,
    the fleet's publisher): the file stays the record of truth, so a sink that fails loses nothing
    the file does not have, and a sink never stops the line from being written."""

    def __init__(self, path: str, max_bytes: int = 64 << 20, keep: int = 5, sinks=()):
        if max_bytes < 4096 or keep < 1:
            raise ValueError("an alert log needs max_bytes >= 4096 and keep >= 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.lines = 0
        self.sinks = list(sinks)
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._fh = open(path, "ab", buffering=0)

    def write(self, event: dict) -> None:
        line = (json.dumps(event, separators=(",", ":"), default=_plain) + "\n").encode()
        with self._lock:
            if self._fh.tell() and self._fh.tell() + len(line) > self.max_bytes:
                self._rotate()
            self._fh.write(line)
            self.lines += 1
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:   # noqa: BLE001 - a broken sink must not stop detection; the file has the event
                logging.getLogger("iadm.alerts").exception("alert sink %r failed; the event is in %s",
                                                           sink, self.path)

    def _rotate(self) -> None:
        self._fh.close()
        for n in range(self.keep - 1, 0, -1):
            if os.path.exists(f"{self.path}.{n}"):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        self._fh = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _plain(value):
    """numpy scalars and the like, as JSON numbers or text."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def log_files(path: str) -> list[str]:
    """The rotated files oldest first, then the live one."""
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    return rotated[::-1] + ([path] if os.path.exists(path) else [])


class BadLine(ValueError):
    pass


def _parse(line: bytes, where: str) -> dict:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise BadLine(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(event, dict) or "timestamp" not in event:
        raise BadLine(f"{where}: not an alert event (no timestamp)")
    try:
        event["_ts"] = parse_timestamp(event["timestamp"])
    except (TypeError, ValueError):
        raise BadLine(f"{where}: bad timestamp {event['timestamp']!r}") from None
    return event


def read_events(path: str, errors: list | None = None):
    """Every event of the log and its rotated files, oldest first. A damaged
    line is skipped and described in `errors` (file:line: what), never fatal."""
    files = log_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no alert log there")
    for name in files:
        with open(name, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield _parse(line, f"{name}:{number}")
                except BadLine as exc:
                    if errors is not None:
                        errors.append(str(exc))


def follow(path: str, poll: float = 0.5, stop=lambda: False, errors: list | None = None):
    """New events as they are written, across rotations (`iadm alerts --follow`)."""
    fh = None
    inode = None
    partial = b""
    while not stop():
        if fh is None:
            try:
                fh = open(path, "rb")
                fh.seek(0, os.SEEK_END)
                inode = os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                time.sleep(poll)
                continue
        chunk = fh.read()
        if chunk:
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        yield _parse(line, path)
                    except BadLine as exc:
                        if errors is not None:
                            errors.append(str(exc))
            continue
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:  # the old file is drained (read() returned nothing): switch to the new one
            fh.close()
            fh, partial = None, b""
            try:
                fh = open(path, "rb")
                inode = os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                fh = None
            continue
        time.sleep(poll)
    if fh:
        fh.close()
