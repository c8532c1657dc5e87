"""The vectorised hash index against a plain dict, over inserts, duplicates, removals and rebuilds."""
import numpy as np

from iadm.flows.slotindex import SlotIndex


def test_index_agrees_with_a_dict_through_churn():
    rng = np.random.default_rng(5)
    capacity = 512
    index = SlotIndex(capacity, 3)
    free = list(range(capacity))   # a stack: its top is the end
    reference = {}
    universe = rng.integers(0, 2**63, size=(2000, 3), dtype=np.uint64)
    universe[:, 0] = np.arange(2000)  # distinct rows; some keys share their other words
    universe[1000:, 1:] = universe[:1000, 1:]
    for round_ in range(60):
        keys = universe[rng.integers(0, len(universe), 200)]  # with duplicates inside the batch
        found = index.lookup(keys)
        expected = np.array([reference.get(tuple(k), -1) for k in keys.tolist()])
        assert (found == expected).all()
        missing = found < 0
        if len(free) < missing.sum():
            victims = rng.choice(list(reference.values()), size=min(len(reference), 300), replace=False)
            index.remove(np.array(victims))
            reference = {k: v for k, v in reference.items() if v not in set(victims.tolist())}
            free += victims.tolist()
        stack = np.array(free, dtype=np.int64)
        slots, first, left = index.insert(keys[missing], stack, len(stack))
        assert (slots >= 0).all()
        assert left == len(free) - len(first)
        free = stack[:left].tolist()
        for k, slot in zip(keys[missing].tolist(), slots.tolist()):
            assert reference.setdefault(tuple(k), slot) == slot   # duplicates share a slot
        assert len(set(slots[first].tolist())) == len(first)        # one first occurrence per new slot
        assert len(index) == len(reference)
    assert index.rebuilds > 0
    assert (index.lookup(universe) == [reference.get(tuple(k), -1) for k in universe.tolist()]).all()
    # Found keys come back as they are; new ones only while the free stack lasts (-1 after).
    known = universe[[k in reference for k in map(tuple, universe.tolist())]][:5]
    fresh = universe[[k not in reference for k in map(tuple, universe.tolist())]][:3]
    slots, first, left = index.insert(np.concatenate([known, fresh]), np.array([7, 9], dtype=np.int64), 2)
    assert slots[:5].tolist() == [reference[tuple(k)] for k in known.tolist()]
    assert slots[5:].tolist() == [9, 7, -1] and first.tolist() == [5, 6] and left == 0
