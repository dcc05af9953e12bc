"""Near-duplicate groups: multi-index search agrees with all pairs, and real copies group while unrelated photos do not."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from forensics.near_duplicates import near_duplicate_pairs, parse_hashes
from forensics.perceptual_hash import hamming_distance


def test_multi_index_search_finds_exactly_the_pairs_an_all_pairs_search_finds():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**64 - 1, (1500, 4), dtype=np.uint64, endpoint=True)
    for row in range(0, 400, 2):  # plant copies 0..40 bits away, around the 31-bit threshold
        copy = words[row].copy()
        for bit in rng.choice(256, int(rng.integers(0, 41)), replace=False):
            copy[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        words[row + 1] = copy
    found = near_duplicate_pairs(words)
    left, right = np.triu_indices(len(words), 1)
    close = hamming_distance(words[left], words[right]) <= 31
    assert set(zip(found.query.tolist(), found.indexed.tolist())) == set(zip(left[close].tolist(), right[close].tolist()))
    assert 0 < close.sum() < 200


def test_malformed_hash_is_named():
    with pytest.raises(ValueError, match="'abc'"):
        parse_hashes(["0" * 64, "abc"])


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_duplicates_job_groups_copies_and_splices_and_keeps_unrelated_photos_apart(ray_local, tiny_checkpoints, tmp_path):
    from skimage import data

    from jobs.cli import main
    from tests.test_scan import scan

    astronaut, coffee, rocket, chelsea = (Image.fromarray(getattr(data, name)()) for name in ("astronaut", "coffee", "rocket", "chelsea"))
    width, height = astronaut.size
    trim = int(round(0.01 * width))
    host = chelsea.copy()
    host_spliced = chelsea.copy()
    host_spliced.paste(astronaut.resize((60, 60)).crop((0, 0, 60, 60)), (20, 20))
    archive = tmp_path / "archive"
    archive.mkdir()
    files = {
        "astronaut.jpg": _jpeg(astronaut),
        "astronaut-reencoded.jpg": _jpeg(astronaut, quality=40),
        "astronaut-half.png": None,
        "astronaut-trimmed.jpg": _jpeg(astronaut.crop((trim, trim, width - trim, height - trim))),
        "cat.jpg": _jpeg(host),
        "cat-spliced.jpg": _jpeg(host_spliced),
        "coffee.jpg": _jpeg(coffee),
        "rocket.jpg": _jpeg(rocket),
    }
    half = io.BytesIO()
    astronaut.resize((width // 2, height // 2)).save(half, "PNG")
    files["astronaut-half.png"] = half.getvalue()
    for name, payload in files.items():
        (archive / name).write_bytes(payload)
    output = tmp_path / "out"
    scan(archive, output, tiny_checkpoints)
    (archive / "astronaut-copy.jpg").write_bytes(files["astronaut.jpg"])  # a second scan: groups span scans
    scan(archive, output, tiny_checkpoints)

    assert main(["duplicates", str(output)]) == 0
    members = pq.read_table(output / "_forgescan" / "duplicates" / "groups.parquet").to_pylist()
    group_of = {row["uri"].rsplit("/", 1)[1]: row["group_id"] for row in members}
    astronauts = {"astronaut.jpg", "astronaut-reencoded.jpg", "astronaut-half.png", "astronaut-trimmed.jpg", "astronaut-copy.jpg"}
    assert {group_of[name] for name in astronauts} == {group_of["astronaut.jpg"]}
    assert group_of["cat.jpg"] == group_of["cat-spliced.jpg"] != group_of["astronaut.jpg"]
    assert "coffee.jpg" not in group_of and "rocket.jpg" not in group_of
    assert all(row["closest_distance"] <= 31 and row["group_size"] >= 2 for row in members)
    pairs = pq.read_table(output / "_forgescan" / "duplicates" / "pairs.parquet").to_pylist()
    assert pairs and all(pair["distance"] <= 31 for pair in pairs)
    manipulated = sorted(((m["uri"], m["manipulation_score"], s["uri"], s["verdict"]) for m in members for s in members
                          if s["group_id"] == m["group_id"] and s["uri"] != m["uri"] and m["verdict"] == "manipulated"),
                         key=lambda row: (-row[1], row[0], row[2]))
    assert readme_likely_sources_recipe(output) == manipulated
    assert ("cat-spliced.jpg", "cat.jpg") in {(m.rsplit("/", 1)[1], s.rsplit("/", 1)[1]) for m, _, s, _ in manipulated}


def readme_likely_sources_recipe(output) -> list[tuple]:
    """The README's "manipulated images and their likely sources" DuckDB recipe, run as printed."""
    import duckdb

    from tests.test_report import readme_block

    query = readme_block("Manipulated images and their likely sources", "sql").replace("DEST", str(output))
    return duckdb.sql(query).fetchall()


def test_scan_with_match_bank_reports_known_images_and_their_labels(ray_local, tiny_checkpoints, tmp_path):
    import pyarrow as pa

    from skimage import data

    from forensics.perceptual_hash import PDQ_INPUT_SIZE, pdq_hash
    from tests.test_scan import read_scan, scan

    astronaut, coffee = Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())
    known = pdq_hash(np.asarray(astronaut.resize(PDQ_INPUT_SIZE[::-1], Image.BILINEAR))).hex
    bank = tmp_path / "bank.parquet"
    pq.write_table(pa.table({"pdq_hash": [known, "f" * 64], "label": ["case-1234 astronaut", "unrelated"]}), bank)
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "astronaut-copy.jpg").write_bytes(_jpeg(astronaut.resize((256, 256)), quality=50))
    (archive / "coffee.jpg").write_bytes(_jpeg(coffee))
    summary = scan(archive, tmp_path / "out", tiny_checkpoints, match_bank=str(bank))
    rows = {row["uri"].rsplit("/", 1)[1]: row for row in read_scan(tmp_path / "out", summary.scan_id)}
    matches = rows["astronaut-copy.jpg"]["bank_matches"]
    assert [m["label"] for m in matches] == ["case-1234 astronaut"] and matches[0]["distance"] <= 31
    assert any("case-1234 astronaut" in reason for reason in rows["astronaut-copy.jpg"]["reasons"])
    assert rows["coffee.jpg"]["bank_matches"] == []


def test_bank_without_hash_column_is_refused_naming_the_file(tmp_path):
    import pyarrow as pa

    from pipeline.hash_bank import HashBankError, load_hash_bank

    bank = tmp_path / "bank.parquet"
    pq.write_table(pa.table({"hash": ["0" * 64]}), bank)
    with pytest.raises(HashBankError, match=r"bank\.parquet: missing column\(s\) pdq_hash, label"):
        load_hash_bank(str(bank))


def test_the_scans_luma_pdq_view_hashes_like_the_rgb_image_and_the_rgb_route():
    import io

    from skimage import data

    from forensics.decode import decode_image
    from forensics.perceptual_hash import PDQ_INPUT_SIZE, PDQ_INPUT_SPEC, hamming_distance, hex_to_words, pdq_hash

    for photo in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
        encoded = io.BytesIO()
        Image.fromarray(photo).save(encoded, format="JPEG", quality=90)
        decoded = decode_image(encoded.getvalue(), [PDQ_INPUT_SPEC, PDQ_INPUT_SIZE])
        luma, rgb = decoded.inputs[PDQ_INPUT_SPEC], decoded.inputs[PDQ_INPUT_SIZE]
        assert luma.shape == PDQ_INPUT_SIZE and rgb.shape == (*PDQ_INPUT_SIZE, 3)
        grey = pdq_hash(luma)
        assert grey.hex == pdq_hash(np.repeat(luma[:, :, None], 3, axis=2)).hex  # grey in, same as its RGB twin
        distance = hamming_distance(hex_to_words([grey.hex]), hex_to_words([pdq_hash(rgb).hex]))[0]
        assert distance <= 4, distance  # PDQ's match threshold is 31: the cheaper view finds the same copies
