"""Blocks that outlive the controller process: a small SQLite table.

A block is written before its flow entry is sent, so a crash between the two
re-installs it on the next connect rather than losing it.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Block:
    block_id: int
    action: str                 # "block" (drop), "rate_limit" (a meter), "alert" (count only) or "guard" (a port's)
    match: dict                 # pipeline.block_match() result
    created: float
    expires: float
    reason: str = ""
    source: str = ""            # who asked: rule sid, model name, operator
    rate: int = 0               # rate_limit: packets/s, or kbit/s when kbps
    kbps: bool = False

    def remaining(self, now: float) -> int:
        return int(self.expires - now + 0.999)

    def as_json(self, now: float) -> dict:
        doc = asdict(self)
        doc["remaining_seconds"] = max(0, self.remaining(now))
        return doc


_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    block_id INTEGER PRIMARY KEY AUTOINCREMENT,
    action   TEXT NOT NULL,
    match    TEXT NOT NULL,
    created  REAL NOT NULL,
    expires  REAL NOT NULL,
    reason   TEXT NOT NULL,
    source   TEXT NOT NULL,
    rate     INTEGER NOT NULL DEFAULT 0,
    kbps     INTEGER NOT NULL DEFAULT 0
)
"""


class BlockStore:
    def __init__(self, path: str, clock=time.time):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(blocks)")}
        for name in ("rate", "kbps"):   # a store written before rate limits existed
            if name not in columns:
                self._db.execute(f"ALTER TABLE blocks ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")

    def add(self, action: str, match: dict, seconds: int, reason: str = "", source: str = "", rate: int = 0,
            kbps: bool = False) -> Block:
        now = self.clock()
        match = _plain(match)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO blocks (action, match, created, expires, reason, source, rate, kbps) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (action, json.dumps(match, sort_keys=True), now, now + seconds, reason, source, rate, int(kbps)))
            block_id = cur.lastrowid
        return Block(block_id, action, match, now, now + seconds, reason, source, rate, kbps)

    def remove(self, block_id: int) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM blocks WHERE block_id=?", (block_id,)).rowcount > 0

    def find(self, match: dict) -> list[Block]:
        key = json.dumps(_plain(match), sort_keys=True)
        return [b for b in self.active() if json.dumps(b.match, sort_keys=True) == key]

    def active(self) -> list[Block]:
        """Blocks with at least one second left; expired rows are purged on the way."""
        now = self.clock()
        with self._lock:
            self._db.execute("DELETE FROM blocks WHERE expires < ?", (now + 1,))
            rows = self._db.execute(
                "SELECT block_id, action, match, created, expires, reason, source, rate, kbps FROM blocks "
                "ORDER BY block_id").fetchall()
        return [Block(r[0], r[1], _plain(json.loads(r[2])), r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows]

    def close(self):
        with self._lock:
            self._db.close()


def _plain(match: dict) -> dict:
    """A match as JSON gives it back: a masked field (value, mask) is a tuple either way."""
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in match.items()}
