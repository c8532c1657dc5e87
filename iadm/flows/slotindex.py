"""Flow key -> slot, as a vectorised open-addressing hash table (numpy).

A dict costs a Python call per new flow, which is every packet of a
spoofed-source flood. Here a whole batch of keys is looked up, and the
missing ones inserted, in a few array passes: linear probing over a table
four times the number of slots, one probe step per pass for all pending
keys at once. Keys are rows of KEY_WORDS uint64 words. Deleted entries
become tombstones; the table is rebuilt when they pile up.
"""
from __future__ import annotations

import numpy as np

EMPTY = -1
TOMBSTONE = -2
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def hash_rows(keys: np.ndarray) -> np.ndarray:
    """A 64-bit mix of each row (splitmix64 finaliser over a running combination)."""
    h = np.zeros(len(keys), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for word in keys.T:
            h = (h ^ word) * _M1
            h ^= h >> np.uint64(31)
        h = (h ^ (h >> np.uint64(30))) * _M2
        h = (h ^ (h >> np.uint64(27))) * _M3
        h ^= h >> np.uint64(31)
    return h


class SlotIndex:
    def __init__(self, capacity: int, key_words: int):
        size = 1
        while size < 4 * capacity:
            size <<= 1
        self.mask = np.int64(size - 1)
        self.table = np.full(size, EMPTY, dtype=np.int64)
        self.slot_keys = np.zeros((capacity, key_words), dtype=np.uint64)
        self.slot_pos = np.full(capacity, -1, dtype=np.int64)
        self.used = 0          # entries that are not EMPTY (live ones and tombstones)
        self.live = 0
        self.rebuilds = 0

    def __len__(self) -> int:
        return self.live

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each key, or -1."""
        result = np.full(len(keys), -1, dtype=np.int64)
        pos = (hash_rows(keys).astype(np.int64) & self.mask)
        pending = np.arange(len(keys))
        while len(pending):
            p = pos[pending]
            t = self.table[p]
            match = self._matches(t, keys[pending])
            result[pending[match]] = t[match]
            go_on = ~match & (t != EMPTY)
            pending = pending[go_on]
            pos[pending] = (pos[pending] + 1) & self.mask
        return result

    def insert(self, keys: np.ndarray, allocate) -> tuple[np.ndarray, np.ndarray]:
        """Slots for keys known to be absent (duplicates allowed: they share one slot).

        allocate(idx) returns a free slot for each key index in idx. Returns (slot of each key, index into
        `keys` of the first occurrence of each new slot), new slots in order.
        """
        result = np.full(len(keys), -1, dtype=np.int64)
        pos = (hash_rows(keys).astype(np.int64) & self.mask)
        pending = np.arange(len(keys))
        new_slots, new_first = [], []
        while len(pending):
            p = pos[pending]
            t = self.table[p]
            match = self._matches(t, keys[pending])
            result[pending[match]] = t[match]
            empty = t == EMPTY
            winners = np.zeros(len(pending), dtype=bool)
            if empty.any():
                # One key per empty position; pending is in batch order, so the first wins.
                where_empty = np.flatnonzero(empty)
                _, first = np.unique(p[where_empty], return_index=True)
                chosen = where_empty[first]
                winners[chosen] = True
                idx = pending[chosen]
                slots = np.asarray(allocate(idx), dtype=np.int64)
                self.table[p[chosen]] = slots
                self.slot_keys[slots] = keys[idx]
                self.slot_pos[slots] = p[chosen]
                result[idx] = slots
                new_slots.append(slots)
                new_first.append(idx)
                self.used += len(slots)
                self.live += len(slots)
            # Losers at an empty position stay put: next pass they meet the winner (same key) or move on.
            move = ~match & ~empty
            stay = ~match & empty & ~winners
            pos[pending[move]] = (pos[pending[move]] + 1) & self.mask
            pending = pending[move | stay]
        if new_slots:
            return result, np.concatenate(new_first)
        return result, np.zeros(0, dtype=np.int64)

    def remove(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        self.table[self.slot_pos[slots]] = TOMBSTONE
        self.slot_pos[slots] = -1
        self.live -= len(slots)
        if self.used > len(self.table) // 2:
            self._rebuild()

    def _matches(self, t: np.ndarray, keys: np.ndarray) -> np.ndarray:
        occupied = t >= 0
        match = np.zeros(len(t), dtype=bool)
        if occupied.any():
            match[occupied] = (self.slot_keys[t[occupied]] == keys[occupied]).all(axis=1)
        return match

    def _rebuild(self) -> None:
        """Drop the tombstones: re-insert every live slot into an empty table."""
        self.rebuilds += 1
        live = np.flatnonzero(self.slot_pos >= 0)
        self.table.fill(EMPTY)
        self.used = self.live = 0
        self.slot_pos.fill(-1)
        self.insert(self.slot_keys[live].copy(), lambda idx: live[idx])
