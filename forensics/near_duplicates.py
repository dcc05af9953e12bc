"""Near-duplicate search over PDQ hashes by multi-index hashing: never all pairs.

Two 256-bit hashes within Hamming distance 31 split into 16 bands of 16 bits
must agree on some band to within one bit (31 differences cannot put two in
every one of 16 bands). So each band is a sorted index of its 16-bit values,
and a query probes, per band, its own value and the 16 values one bit away:
17 binary searches per band. Only hashes found that way are compared in full.
The work is split by band (and by query range), so a Ray job runs the pieces
in parallel; a pair found in several bands is reported once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forensics.perceptual_hash import MATCH_DISTANCE, hamming_distance

BANDS = 16
BAND_BITS = 16
PROBES = np.array([0] + [1 << bit for bit in range(BAND_BITS)], dtype=np.uint16)  # own value, then 1-bit neighbours
MAX_CANDIDATES_PER_CHUNK = 4_000_000  # bounds a task's memory: candidates are compared in chunks of this size


def parse_hashes(hashes) -> np.ndarray:
    """64-hex-character PDQ hashes -> (n, 4) uint64 words; raises ValueError naming the first malformed hash."""
    hashes = [str(text) for text in hashes]
    try:
        raw = bytes.fromhex("".join(hashes))
    except ValueError:
        raw = b""
    if len(raw) != 32 * len(hashes):
        bad = next((text for text in hashes if len(text) != 64 or not _is_hex(text)), None)
        raise ValueError(f"not a PDQ hash (64 hex characters): {bad!r}")
    return np.frombuffer(raw, dtype=">u8").reshape(len(hashes), 4).astype(np.uint64)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
        return True
    except ValueError:
        return False


def band_values(words: np.ndarray, band: int) -> np.ndarray:
    """The 16-bit value of `band` (0-15) of every hash."""
    word, shift = divmod(band, 4)
    return ((words[:, word] >> np.uint64(16 * shift)) & np.uint64(0xFFFF)).astype(np.uint16)


@dataclass
class BandIndex:
    """One band of an indexed hash set: hash ids sorted by their band value, and where each value's run starts.

    A band value has 16 bits, so the runs are found by direct lookup (`starts[value]`), not a search.
    """

    band: int
    starts: np.ndarray  # (65537,): ids of value v are order[starts[v]:starts[v + 1]]
    order: np.ndarray
    sorted_words: np.ndarray  # words[order]: a value's candidates are one contiguous slice (cache-friendly)

    @classmethod
    def build(cls, words: np.ndarray, band: int) -> BandIndex:
        values = band_values(words, band)
        order = np.argsort(values, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(values, minlength=1 << BAND_BITS))])
        return cls(band, starts, order, words[order])


@dataclass(frozen=True)
class Pairs:
    """Matching pairs: `query[k]` and `indexed[k]` are `distance[k]` bits apart."""

    query: np.ndarray
    indexed: np.ndarray
    distance: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))

    @classmethod
    def concat(cls, parts: list[Pairs]) -> Pairs:
        parts = [p for p in parts if len(p.query)] or [cls.empty()]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("query", "indexed", "distance")))

    def unique(self) -> Pairs:
        """Each (query, indexed) pair once (several bands find the same pair)."""
        if not len(self.query):
            return self
        keys = np.stack([self.query, self.indexed], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        return Pairs(self.query[first], self.indexed[first], self.distance[first])


def band_matches(query_words: np.ndarray, query_ids: np.ndarray, index: BandIndex, indexed_words: np.ndarray,
                 max_distance: int = MATCH_DISTANCE, only_later: bool = False) -> Pairs:
    """Pairs within `max_distance` among hashes that agree with a query on `index.band` to within one bit.

    Args:
        query_words: the query hashes (rows selected by `query_ids`).
        query_ids: which rows of `query_words` to look up (a shard of the queries).
        index: the band index built over `indexed_words`.
        only_later: self-join mode (query set == indexed set): keep only indexed id > query id.
    """
    if max_distance >= 2 * BANDS:
        raise ValueError(f"multi-index hashing with {BANDS} bands finds distances up to {2 * BANDS - 1}, not {max_distance}")
    query_ids = np.asarray(query_ids, dtype=np.int64)
    own = band_values(query_words[query_ids], index.band)
    by_value = np.argsort(own, kind="stable")  # neighbouring queries probe neighbouring runs
    query_ids, own = query_ids[by_value], own[by_value]
    found = []
    # Probe all 17 neighbours of a block of queries at once, in blocks sized to bound the candidate count.
    block = max(1, min(len(query_ids), 65_536))
    for start in range(0, len(query_ids), block):
        ids = query_ids[start:start + block]
        probes = (own[start:start + block, None] ^ PROBES[None, :]).ravel()
        probe_owner = np.repeat(ids, len(PROBES))
        left = index.starts[probes]
        counts = index.starts[probes.astype(np.int64) + 1] - left
        hit = counts > 0
        probe_owner, left, counts = probe_owner[hit], left[hit], counts[hit]
        cumulative = np.cumsum(counts)
        begin = 0
        while begin < len(counts):
            # Cut the probes so that one chunk expands to at most MAX_CANDIDATES_PER_CHUNK candidates.
            limit = (cumulative[begin - 1] if begin else 0) + MAX_CANDIDATES_PER_CHUNK
            end = max(begin + 1, int(np.searchsorted(cumulative, limit, side="right")))
            found.append(_verify(probe_owner[begin:end], left[begin:end], counts[begin:end], index, query_words,
                                 indexed_words, max_distance, only_later))
            begin = end
    return Pairs.concat(found)


def _verify(owners, left, counts, index: BandIndex, query_words, indexed_words, max_distance, only_later) -> Pairs:
    total = int(counts.sum())
    positions = np.arange(total) + np.repeat(left - (np.cumsum(counts) - counts), counts)
    candidates = index.order[positions]
    queries = np.repeat(owners, counts)
    if only_later:
        keep = candidates > queries
        candidates, queries, positions = candidates[keep], queries[keep], positions[keep]
    distance = hamming_distance(query_words[queries], index.sorted_words[positions])
    close = distance <= max_distance
    return Pairs(queries[close], candidates[close].astype(np.int64), distance[close])


def near_duplicate_pairs(words: np.ndarray, max_distance: int = MATCH_DISTANCE) -> Pairs:
    """All pairs (i < j) within `max_distance` in one hash set, in-process (the Ray job splits this by band)."""
    ids = np.arange(len(words))
    return Pairs.concat([band_matches(words, ids, BandIndex.build(words, band), words, max_distance, only_later=True)
                         for band in range(BANDS)]).unique()


def connected_groups(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Group label per hash: hashes linked by a chain of matching pairs share a label (union of pairs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    return labels
