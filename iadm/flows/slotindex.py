"""Flow key -> slot, as an open-addressing hash table over numpy arrays, probed in compiled code.

A dict costs a Python call per new flow, which is every packet of a
spoofed-source flood. Here the table is an int64 array four times the
number of slots, probed linearly by a numba kernel per batch of keys. Keys
are rows of KEY_WORDS uint64 words. Deleted entries become tombstones; the
table is rebuilt when they pile up. New slots come from the caller's free
stack (an array and its fill), popped in key order.
"""
from __future__ import annotations

import numpy as np
from numba import njit

EMPTY = -1
TOMBSTONE = -2
_NOTHING_FREE = np.zeros(0, dtype=np.int64)


@njit(cache=True, nogil=True)
def _hash(keys, i):
    """A 64-bit mix of row i (splitmix64 finaliser over a running combination)."""
    h = np.uint64(0)
    for w in range(keys.shape[1]):
        h = (h ^ keys[i, w]) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(31)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True)
def _same(slot_keys, slot, keys, i):
    for w in range(keys.shape[1]):
        if slot_keys[slot, w] != keys[i, w]:
            return False
    return True


@njit(cache=True, nogil=True)
def _insert(table, slot_keys, slot_pos, mask, keys, free, nfree):
    """Slot of each key, found or newly taken from the free stack (a duplicate finds the slot its
    first occurrence got); -1 for a new key once the stack is empty."""
    n = keys.shape[0]
    result = np.empty(n, dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    new = 0
    for i in range(n):
        pos = np.int64(_hash(keys, i) & np.uint64(mask))
        while True:
            t = table[pos]
            if t == EMPTY:
                if nfree == 0:
                    result[i] = -1
                    break
                nfree -= 1
                slot = free[nfree]
                table[pos] = slot
                slot_keys[slot] = keys[i]
                slot_pos[slot] = pos
                result[i] = slot
                first[new] = i
                new += 1
                break
            if t >= 0 and _same(slot_keys, t, keys, i):
                result[i] = t
                break
            pos = (pos + 1) & mask
    return result, first[:new], nfree


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
        """Slot of each key, or -1: an insert with nothing free to insert with."""
        return self.insert(keys, _NOTHING_FREE, 0)[0]

    def insert(self, keys: np.ndarray, free: np.ndarray, nfree: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The slot of each key: found, or new from the top of the stack free[:nfree] (duplicates
        share one), or -1 when the stack ran out. Returns (slot of each key, index into `keys` of
        the first occurrence of each new slot, the stack's new fill). One probe sequence per key."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        result, first, left = _insert(self.table, self.slot_keys, self.slot_pos, self.mask, keys, free, nfree)
        self.used += len(first)
        self.live += len(first)
        return result, first, int(left)

    def remove(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        self.table[self.slot_pos[slots]] = TOMBSTONE
        self.slot_pos[slots] = -1
        self.live -= len(slots)
        if self.used > len(self.table) // 2:
            self._rebuild()

    def _rebuild(self) -> None:
        """Drop the tombstones: re-insert every live slot, into the same slot, in an empty table."""
        self.rebuilds += 1
        live = np.flatnonzero(self.slot_pos >= 0)
        self.table.fill(EMPTY)
        self._reinsert(live, self.slot_keys[live].copy())

    def grow(self, capacity: int) -> None:
        """Room for slots up to `capacity`; every live slot keeps its number (a bigger table, rebuilt)."""
        live = np.flatnonzero(self.slot_pos >= 0)
        keys = self.slot_keys[live].copy()
        size = 1
        while size < 4 * capacity:
            size <<= 1
        self.mask = np.int64(size - 1)
        self.table = np.full(size, EMPTY, dtype=np.int64)
        self.slot_keys = np.zeros((capacity, self.slot_keys.shape[1]), dtype=np.uint64)
        self.slot_pos = np.full(capacity, -1, dtype=np.int64)
        self._reinsert(live, keys)

    def _reinsert(self, live: np.ndarray, keys: np.ndarray) -> None:
        self.used = self.live = 0
        self.slot_pos.fill(-1)
        self.insert(keys, live[::-1].copy(), len(live))   # the stack pops live[0], live[1], ...


def grow_free_stack(free: np.ndarray, nfree: int, old: int, new: int) -> tuple[np.ndarray, int]:
    """A free stack for `new` slots from one for `old`: the new slots go under the free ones, so
    slots are handed out in the order a stack of the full size would hand them out."""
    out = np.empty(new, dtype=np.int64)
    out[:new - old] = np.arange(new - 1, old - 1, -1)
    out[new - old:new - old + nfree] = free[:nfree]
    return out, nfree + new - old
