"""A bank of known PDQ hashes with labels: the scan reports, per row, which known images it matches.

This is how hash-sharing programmes work: members exchange hashes of known
images (not the images), and each scan flags copies of them. The bank is a
Parquet file with a `pdq_hash` column (64 hex characters) and a `label` column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forensics.near_duplicates import BANDS, BandIndex, Pairs, band_matches, parse_hashes
from forensics.perceptual_hash import MATCH_DISTANCE
from pipeline import schema

BANK_COLUMNS = ("pdq_hash", "label")


class HashBankError(ValueError):
    """A hash bank that cannot be used; the message names the file and the fix."""


def load_hash_bank(path: str, endpoint_url: str | None = None, storage_options_json: str = "{}") -> pa.Table:
    """Read and check a bank: its `pdq_hash` and `label` columns, malformed hashes named."""
    from pipeline.storage import filesystem_for, parse_location

    location = parse_location(path)
    try:
        fs = filesystem_for(location.protocol, endpoint_url, storage_options_json)
        with fs.open(location.path, "rb") as handle:
            table = pq.read_table(handle)
    except Exception as error:
        raise HashBankError(f"--match-bank {path}: cannot read it as Parquet ({type(error).__name__}: {error}); "
                            f"pass a Parquet file with columns {', '.join(BANK_COLUMNS)}") from None
    missing = [name for name in BANK_COLUMNS if name not in table.column_names]
    if missing:
        raise HashBankError(f"--match-bank {path}: missing column(s) {', '.join(missing)}; "
                            f"a bank needs {', '.join(BANK_COLUMNS)} (pdq_hash as 64 hex characters)")
    table = table.select(list(BANK_COLUMNS)).cast(pa.schema([("pdq_hash", pa.string()), ("label", pa.string())]))
    table = table.filter(pc.is_valid(table.column("pdq_hash")))
    try:
        parse_hashes(table.column("pdq_hash").to_pylist())
    except ValueError as error:
        raise HashBankError(f"--match-bank {path}: {error}") from None
    return table


def match_hash_bank(batch: pa.Table, bank: pa.Table, max_distance: int = MATCH_DISTANCE) -> pa.Table:
    """Fill `bank_matches` (closest first) and add a reason per match, for rows with a PDQ hash."""
    hashes = batch.column(schema.PDQ_HASH).to_pylist()
    rows = [index for index, value in enumerate(hashes) if value]
    matches: list = [None] * batch.num_rows
    if rows and bank.num_rows:
        query_words = parse_hashes([hashes[index] for index in rows])
        bank_words = parse_hashes(bank.column("pdq_hash").to_pylist())
        ids = np.arange(len(rows))
        pairs = Pairs.concat([band_matches(query_words, ids, BandIndex.build(bank_words, band), bank_words, max_distance)
                              for band in range(BANDS)]).unique()
        labels, bank_hashes = bank.column("label").to_pylist(), bank.column("pdq_hash").to_pylist()
        for query, indexed, distance in sorted(zip(pairs.query.tolist(), pairs.indexed.tolist(), pairs.distance.tolist()),
                                               key=lambda match: (match[0], match[2], match[1])):
            row = rows[query]
            matches[row] = (matches[row] or []) + [{"label": labels[indexed], "distance": distance,
                                                    "pdq_hash": bank_hashes[indexed]}]
    for index in rows:
        matches[index] = matches[index] or []
    reasons = batch.column(schema.REASONS).to_pylist()
    for index, found in enumerate(matches):
        for match in found or []:
            reasons[index] = (reasons[index] or []) + [f"matches hash bank entry {match['label']!r} (PDQ distance {match['distance']})"]
    batch = batch.set_column(batch.schema.get_field_index(schema.REASONS), schema.OUTPUT_SCHEMA.field(schema.REASONS),
                             pa.array(reasons, schema.OUTPUT_SCHEMA.field(schema.REASONS).type))
    position = batch.schema.get_field_index(schema.BANK_MATCHES)
    return batch.set_column(position, schema.OUTPUT_SCHEMA.field(schema.BANK_MATCHES),
                            pa.array(matches, schema.OUTPUT_SCHEMA.field(schema.BANK_MATCHES).type))
