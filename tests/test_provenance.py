"""Declared provenance read from real files: signed and tampered C2PA, XMP, EXIF, generator text chunks."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from forensics.provenance import read_provenance
from forensics.verdict import AI_GENERATED, MANIPULATED, decide_verdict
from forensics.content_credentials import (
    A1111_PARAMETERS, COMFYUI_PROMPT, exif_with, jpeg, picture, png, sign_with_c2pa, tamper_pixels, xmp_packet,
)


@pytest.fixture(scope="module")
def signed_ai_jpeg():
    return sign_with_c2pa(jpeg(picture(1)), "image/jpeg", "trainedAlgorithmicMedia", generator="Diffusion Studio")


def test_signed_c2pa_manifest_is_read_with_generator_actions_and_ai_source(signed_ai_jpeg):
    found = read_provenance(signed_ai_jpeg, "JPEG")
    assert found.c2pa_present and found.errors == []
    assert found.c2pa_validation == "untrusted_signer"  # intact, but the throwaway root is on no trust list
    assert found.c2pa_failures == ["signingCredential.untrusted"]
    assert found.c2pa_claim_generator == "Diffusion Studio 1.0"
    assert found.c2pa_actions == ["c2pa.created"]
    assert found.c2pa_digital_source_type == "trainedAlgorithmicMedia"
    assert found.declared_ai
    assert any("C2PA digital source type trainedAlgorithmicMedia" in reason for reason in found.reasons)


def test_c2pa_manifest_tampered_after_signing_is_invalid_with_the_failing_check(signed_ai_jpeg):
    found = read_provenance(tamper_pixels(signed_ai_jpeg), "JPEG")
    assert found.c2pa_present and found.c2pa_validation == "invalid"
    assert "assertion.dataHash.mismatch" in found.c2pa_failures
    assert any(reason.startswith("invalid content credentials") and "dataHash.mismatch" in reason for reason in found.reasons)


def test_c2pa_digital_creation_is_not_an_ai_declaration():
    signed = sign_with_c2pa(png(picture(2)), "image/png", "digitalCapture")
    found = read_provenance(signed, "PNG")
    assert found.c2pa_present and found.c2pa_digital_source_type == "digitalCapture"
    assert not found.declared_ai and found.reasons == []


def test_corrupt_c2pa_manifest_is_a_field_error_and_other_fields_still_read(signed_ai_jpeg):
    start = signed_ai_jpeg.find(b"c2pa")
    corrupt = signed_ai_jpeg[:start + 40] + bytes(200) + signed_ai_jpeg[start + 240:]
    found = read_provenance(corrupt, "JPEG")
    assert any(error.startswith("c2pa:") for error in found.errors) or found.c2pa_validation == "invalid"


def test_xmp_digital_source_type_outside_c2pa_declares_ai():
    found = read_provenance(jpeg(picture(3), xmp=xmp_packet("compositeWithTrainedAlgorithmicMedia")), "JPEG")
    assert not found.c2pa_present
    assert found.xmp_digital_source_type == "compositeWithTrainedAlgorithmicMedia" and found.declared_ai


def test_huge_xmp_packet_is_a_field_error_not_a_failure():
    packet = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * (2 << 20) + b"</x:xmpmeta>"
    found = read_provenance(jpeg(picture(4)) + packet, "JPEG")
    assert found.xmp_digital_source_type is None
    assert any(error.startswith("xmp:") and "limit" in error for error in found.errors)


def test_a1111_parameters_chunk_names_the_web_ui_and_model():
    found = read_provenance(png(picture(5), {"parameters": A1111_PARAMETERS}), "PNG")
    assert found.generator_hint == "Stable Diffusion web UI (model sd_xl_base_1.0)"
    assert found.generation_parameters.startswith("a lighthouse at dusk") and found.declared_ai


def test_comfyui_prompt_chunk_names_comfyui_and_checkpoint():
    found = read_provenance(png(picture(6), {"prompt": COMFYUI_PROMPT, "workflow": "{}"}), "PNG")
    assert found.generator_hint == "ComfyUI (model flux1-dev.safetensors)" and found.declared_ai


def test_exif_camera_fields_are_read_and_do_not_declare_ai():
    found = read_provenance(jpeg(picture(7), exif=exif_with(software="GIMP 2.10", make="Canon", model="EOS R5")), "JPEG")
    assert (found.exif_software, found.exif_make, found.exif_model) == ("GIMP 2.10", "Canon", "EOS R5")
    assert not found.declared_ai and found.generator_hint is None


def test_exif_user_comment_with_generation_parameters_declares_ai():
    found = read_provenance(jpeg(picture(8), exif=exif_with(user_comment=A1111_PARAMETERS)), "JPEG")
    assert found.generator_hint == "Stable Diffusion web UI (model sd_xl_base_1.0)" and found.declared_ai


def test_malformed_exif_is_a_field_error():
    good = jpeg(picture(9), exif=exif_with(software="Camera Firmware 1.0", make="Nikon"))
    start = good.find(b"Exif\x00\x00")
    broken = good[:start + 6] + b"MM\x00\x2a\xff\xff\xff\xf0" + good[start + 14:]
    found = read_provenance(broken, "JPEG")
    assert found.exif_make is None
    assert any(error.startswith("exif:") for error in found.errors)


def test_plain_photo_declares_nothing():
    found = read_provenance(jpeg(picture(10)), "JPEG")
    assert found.to_row() == {**found.to_row(), "c2pa_present": False, "declared_ai": False, "errors": [],
                              "generator_hint": None, "xmp_digital_source_type": None}


def test_declared_ai_source_overrides_the_pixel_verdict_and_says_why():
    verdict = decide_verdict(0.1, 0.9, 0.5, 0.5, declared_ai=True)
    assert verdict.label == AI_GENERATED
    assert verdict.reasons == ["manipulation_score 0.900 >= threshold 0.500"]
    assert decide_verdict(0.1, 0.9, 0.5, 0.5).label == MANIPULATED


def test_scan_rows_carry_provenance_reasons_and_pdq_hashes(ray_local, tiny_checkpoints, signed_ai_jpeg, tmp_path):
    from tests.test_scan import read_scan, scan

    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "credentialed.jpg").write_bytes(signed_ai_jpeg)
    (archive / "tampered.jpg").write_bytes(tamper_pixels(signed_ai_jpeg))
    (archive / "webui.png").write_bytes(png(picture(11), {"parameters": A1111_PARAMETERS}))
    (archive / "photo.jpg").write_bytes(jpeg(picture(12), exif=exif_with(make="Canon", model="EOS R5")))
    (archive / "broken.jpg").write_bytes(b"\xff\xd8\xff" + bytes(50))
    summary = scan(archive, tmp_path / "out", tiny_checkpoints)
    rows = {row["uri"].rsplit("/", 1)[1]: row for row in read_scan(tmp_path / "out", summary.scan_id)}
    for name in ("credentialed.jpg", "tampered.jpg", "webui.png"):
        assert rows[name]["verdict"] == "ai_generated" and rows[name]["provenance"]["declared_ai"]
        assert any(reason.startswith("declared AI source") for reason in rows[name]["reasons"])
        assert rows[name]["ai_score"] is not None  # the pixel score stays beside the declared source
    assert rows["credentialed.jpg"]["provenance"]["c2pa_validation"] == "untrusted_signer"
    assert rows["tampered.jpg"]["provenance"]["c2pa_validation"] == "invalid"
    assert rows["webui.png"]["provenance"]["generator_hint"].startswith("Stable Diffusion web UI")
    photo = rows["photo.jpg"]
    assert (photo["provenance"]["exif_make"], photo["provenance"]["declared_ai"]) == ("Canon", False)
    assert photo["reasons"] and not any("declared" in reason for reason in photo["reasons"])
    for name in ("credentialed.jpg", "webui.png", "photo.jpg"):
        assert len(rows[name]["pdq_hash"]) == 64 and int(rows[name]["pdq_hash"], 16) >= 0
        assert 0 <= rows[name]["pdq_quality"] <= 100
    broken = rows["broken.jpg"]
    assert (broken["status"], broken["provenance"], broken["pdq_hash"]) == ("error", None, None)
    assert broken["reasons"][0].startswith("error:")
    assert readme_declared_ai_recipe(tmp_path / "out") == [
        (rows[name]["uri"], rows[name]["provenance"]["generator_hint"]) for name in ("credentialed.jpg", "tampered.jpg", "webui.png")]


def readme_declared_ai_recipe(output) -> list[tuple]:
    """The README's "images that declare an AI source" DuckDB recipe, run as printed: (uri, generator_hint) per row."""
    import duckdb

    from tests.test_report import readme_block

    query = readme_block("Images that declare an AI source", "sql").replace("DEST", str(output))
    return [(uri, hint) for uri, hint, *_ in duckdb.sql(query).fetchall()]


def test_sample_archive_carries_each_signal_and_a_demo_scan_reports_them(ray_local, tiny_checkpoints, tmp_path):
    from forensics.synthetic import write_provenance_examples, real_photographs
    from jobs.cli import main
    from tests.test_scan import read_scan, scan

    archive = tmp_path / "archive"
    write_provenance_examples(archive, real_photographs()[0], size=96)
    (archive / "images/unrelated.jpg").write_bytes(jpeg(picture(5, (96, 96))))
    summary = scan(archive / "images", tmp_path / "out", tiny_checkpoints)
    rows = {row["uri"].split("/images/", 1)[1]: row for row in read_scan(tmp_path / "out", summary.scan_id)}
    signed, tampered = rows["provenance/c2pa_signed_ai_source.jpg"], rows["provenance/c2pa_tampered_after_signing.jpg"]
    assert signed["provenance"]["c2pa_validation"] == "untrusted_signer"  # signature checks out; the throwaway root is not trusted
    assert signed["provenance"]["c2pa_digital_source_type"] == "trainedAlgorithmicMedia"
    assert signed["verdict"] == "ai_generated" and any(r.startswith("declared AI source") for r in signed["reasons"])
    assert tampered["provenance"]["c2pa_validation"] == "invalid"
    assert rows["provenance/webui_generation_parameters.png"]["provenance"]["generator_hint"].startswith("Stable Diffusion web UI")
    assert rows["provenance/xmp_ai_source.jpg"]["provenance"]["xmp_digital_source_type"] == "trainedAlgorithmicMedia"
    assert main(["duplicates", str(tmp_path / "out")]) == 0
    groups = pq.read_table(tmp_path / "out" / "_forgescan" / "duplicates" / "groups.parquet").to_pylist()
    group_of = {row["uri"].split("/images/", 1)[1]: row["group_id"] for row in groups}
    copies = [name for name in rows if name.startswith("copies/")]
    assert len(copies) == 4 and len({group_of[name] for name in copies}) == 1
    assert "unrelated.jpg" not in group_of
