"""semlayer.cache.BoundedCache: least recently used dropped first past the byte budget, by reference."""

import numpy as np

from semlayer.cache import BoundedCache


def test_the_bounded_cache_keeps_references_and_drops_the_least_recently_used():
    cache = BoundedCache(max_bytes=250)
    arrays = [np.zeros(100, np.uint8) for _ in range(3)]
    assert cache.value("a", lambda: arrays[0]) is arrays[0]
    cache.put("b", arrays[1])
    assert cache.get("a") is arrays[0]  # a hit makes "a" the most recent
    cache.put("c", arrays[2])
    assert cache.keys() == ["a", "c"] and cache.nbytes == 200
    cache.put("big", np.zeros(1000, np.uint8))
    assert cache.keys() == ["big"] and cache.nbytes == 1000  # the newest always stays
    assert cache.value("big", lambda: None) is cache.get("big") and len(cache) == 1
