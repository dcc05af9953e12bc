"""Near-duplicate groups across every scan of an output, as a Ray Data job over the rows' PDQ hashes.

Every distinct image (URI and content digest, latest row) with a reliable PDQ
hash takes part. The search is split into (band, query shard) tasks, each a
multi-index lookup (forensics.near_duplicates), so no task compares all pairs;
matching pairs are then joined into groups (connected components). A
manipulated image's group shows its likely sources and other copies.

Output, beside the scans (ignored by readers of the scan rows, like every `_` folder):
  DEST/_forgescan/duplicates/groups.parquet  one row per member of a group of 2 or more
  DEST/_forgescan/duplicates/pairs.parquet   every matching pair and its Hamming distance
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forensics.near_duplicates import BANDS, BandIndex, Pairs, band_matches, connected_groups, parse_hashes
from forensics.perceptual_hash import MATCH_DISTANCE, MIN_QUALITY
from pipeline import schema

logger = logging.getLogger("forgescan")

DUPLICATES_FOLDER = "_forgescan/duplicates"
QUERIES_PER_SHARD = 250_000  # one task: one band, up to this many query hashes
MEMBER_COLUMNS = (schema.SCAN_ID, schema.URI, schema.SHA256, schema.PDQ_HASH, schema.PDQ_QUALITY, schema.VERDICT,
                  schema.AI_SCORE, schema.MANIPULATION_SCORE, schema.WIDTH, schema.HEIGHT)


class DuplicatesError(RuntimeError):
    """A near-duplicate search that cannot run; the message names the input and the fix."""


@dataclass(frozen=True)
class DuplicatesConfig:
    output: str
    endpoint_url: str | None = None
    storage_options: dict | None = None
    max_distance: int = MATCH_DISTANCE
    min_quality: int = MIN_QUALITY
    address: str | None = None


@dataclass(frozen=True)
class DuplicatesSummary:
    hashes: int
    pairs: int
    groups: int
    grouped_images: int
    groups_path: str
    pairs_path: str


def find_pairs_ray(words: np.ndarray, max_distance: int = MATCH_DISTANCE, queries_per_shard: int = QUERIES_PER_SHARD) -> Pairs:
    """All pairs (i < j) within `max_distance`, found by Ray Data tasks, one per (band, query shard)."""
    import ray

    words_ref = ray.put(words)
    tasks = [{"band": band, "first": first, "last": min(first + queries_per_shard, len(words))}
             for band in range(BANDS) for first in range(0, len(words), queries_per_shard)]
    dataset = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map_batches(
        _band_shard_pairs, batch_size=1, batch_format="numpy", num_cpus=1,
        fn_kwargs={"words_ref": [words_ref], "max_distance": max_distance})
    parts = [Pairs(batch["query"], batch["indexed"], batch["distance"])
             for batch in dataset.iter_batches(batch_size=None, batch_format="numpy")]
    return Pairs.concat(parts).unique()


def _band_shard_pairs(task: dict[str, np.ndarray], words_ref, max_distance: int) -> dict[str, np.ndarray]:
    import ray

    words = ray.get(words_ref[0])  # wrapped in a list so Ray passes the reference, not the value
    found = []
    for band, first, last in zip(task["band"], task["first"], task["last"]):
        found.append(band_matches(words, np.arange(int(first), int(last)), BandIndex.build(words, int(band)), words,
                                  max_distance, only_later=True))
    pairs = Pairs.concat(found).unique()
    return {"query": pairs.query, "indexed": pairs.indexed, "distance": pairs.distance}


def load_hashes(config: DuplicatesConfig) -> tuple[pa.Table, object, object]:
    """(rows, output filesystem, output location): the latest ok row per (URI, content) across all scans, with a PDQ hash of at least `min_quality`."""
    from pipeline.results import ScanResults

    results = ScanResults(config.output, config.endpoint_url, config.storage_options)
    if results.dataset is None:
        raise DuplicatesError(f"no scan rows under {config.output}: run `forgescan scan SOURCE --output {config.output}` first")
    table = results.connection.sql(f"""
        SELECT {", ".join(MEMBER_COLUMNS)} FROM results
        WHERE {schema.STATUS} = 'ok' AND {schema.PDQ_HASH} IS NOT NULL AND {schema.PDQ_QUALITY} >= ?
        QUALIFY row_number() OVER (PARTITION BY {schema.URI}, {schema.SHA256} ORDER BY {schema.SCANNED_AT} DESC) = 1
        ORDER BY {schema.URI}, {schema.SHA256}
    """, params=[config.min_quality]).to_arrow_table()
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    return table, results.state.fs, results.location


def find_duplicate_groups(config: DuplicatesConfig) -> DuplicatesSummary:
    """Group near-duplicates across every scan of `config.output` and write groups and pairs as Parquet."""
    import ray

    if not 0 <= config.max_distance < 2 * BANDS:
        raise DuplicatesError(f"--max-distance {config.max_distance}: choose 0 to {2 * BANDS - 1} (PDQ's match threshold is {MATCH_DISTANCE})")
    table, fs, location = load_hashes(config)
    words = parse_hashes(table.column(schema.PDQ_HASH).to_pylist())
    if not ray.is_initialized():
        ray.init(address=config.address, logging_level=logging.WARNING)
    pairs = find_pairs_ray(words, config.max_distance) if len(words) > 1 else Pairs.empty()
    labels = connected_groups(len(words), pairs.query, pairs.indexed)
    groups, pairs_table = group_tables(table, labels, pairs)
    folder = f"{location.path}/{DUPLICATES_FOLDER}"
    fs.makedirs(folder, exist_ok=True)
    groups_path, pairs_path = f"{folder}/groups.parquet", f"{folder}/pairs.parquet"
    for path, data in ((groups_path, groups), (pairs_path, pairs_table)):
        with fs.open(path + ".partial", "wb") as handle:
            pq.write_table(data, handle)
        fs.mv(path + ".partial", path)
    prefix = "" if location.protocol == "file" else f"{location.protocol}://"
    return DuplicatesSummary(hashes=len(words), pairs=len(pairs.query), groups=len(set(groups.column("group_id").to_pylist())),
                             grouped_images=groups.num_rows, groups_path=prefix + groups_path, pairs_path=prefix + pairs_path)


def group_tables(table: pa.Table, labels: np.ndarray, pairs: Pairs) -> tuple[pa.Table, pa.Table]:
    """Members of groups of two or more (numbered by size, largest first) and the pairs that joined them."""
    sizes = np.bincount(labels, minlength=1) if len(labels) else np.zeros(0, np.int64)
    grouped = np.flatnonzero(sizes[labels] >= 2) if len(labels) else np.zeros(0, np.int64)
    ranking = sorted(set(labels[grouped].tolist()), key=lambda label: (-sizes[label], label))
    number = {label: rank for rank, label in enumerate(ranking)}
    closest = np.full(len(labels), 256, dtype=np.int32)
    np.minimum.at(closest, pairs.query, pairs.distance)
    np.minimum.at(closest, pairs.indexed, pairs.distance)
    members = table.take(pa.array(grouped, pa.int64()))
    members = members.append_column("group_id", pa.array([number[label] for label in labels[grouped]], pa.int64()))
    members = members.append_column("group_size", pa.array(sizes[labels[grouped]], pa.int32()))
    members = members.append_column("closest_distance", pa.array(closest[grouped], pa.int32()))
    members = members.sort_by([("group_id", "ascending"), (schema.URI, "ascending")])
    uris = table.column(schema.URI)
    pairs_table = pa.table({
        "group_id": pa.array([number[label] for label in labels[pairs.query]], pa.int64()),
        "uri": uris.take(pa.array(pairs.query, pa.int64())),
        "other_uri": uris.take(pa.array(pairs.indexed, pa.int64())),
        "distance": pa.array(pairs.distance, pa.int32()),
    })
    return members, pairs_table
