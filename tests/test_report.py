"""The analyst's side: the HTML report rendered in headless Chromium, the summary, and the notebook helpers.

The scans are real (tiny random-weight models on a local Ray instance). Their
cards' thresholds are set so the verdicts are known in advance: with a pixel
threshold of 0 every mask covers the whole image, and the image-level
thresholds (0 = always, 1.01 = never) decide whether that mask is a finding.
"""

from __future__ import annotations

import base64
import json
import io
import shutil
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from PIL import Image

from forensics.checkpoint import save_checkpoint
from forensics.model_card import default_classifier_card, default_segmenter_card
from forensics.models import build_model
from forensics.visualize import BELOW_THRESHOLD_COLOUR, MASK_COLOUR
from jobs.cli import main as forgescan
from pipeline.config import ScanConfig
from pipeline.scan import run_scan
from tests.conftest import TINY_INPUT, _exif_rotated_jpeg, jpeg_bytes

ALWAYS, NEVER = 0.0, 1.01
GOOD_IMAGES = {"photos/a.jpg": (120, 80, 1), "photos/b.jpg": (64, 96, 2), "photos/nested/c.jpg": (90, 90, 3)}
ROTATED = "photos/rotated.jpg"  # stored 100x40 with EXIF orientation 6: displayed 40x100


@pytest.fixture(scope="module")
def checkpoints_judging(tmp_path_factory):
    """checkpoints_judging(ai=..., manipulated=...) -> tiny checkpoints whose cards carry these thresholds."""
    import torch

    folder = tmp_path_factory.mktemp("threshold_checkpoints")
    made = {}

    def make(ai: float, manipulated: float) -> dict:
        key = (ai, manipulated)
        if key not in made:
            torch.manual_seed(0)
            name = f"ai{ai}-manip{manipulated}"
            classifier_card = default_classifier_card(TINY_INPUT).replace(version=f"tiny-classifier-{name}",
                                                                          thresholds={"ai_generated": ai})
            segmenter_card = default_segmenter_card(TINY_INPUT).replace(
                version=f"tiny-segmenter-{name}", thresholds={"pixel": 0.0, "manipulated": manipulated})
            made[key] = {
                "classifier": str(save_checkpoint(build_model(classifier_card), classifier_card, folder / f"{name}-c.safetensors")),
                "segmenter": str(save_checkpoint(build_model(segmenter_card), segmenter_card, folder / f"{name}-s.safetensors")),
            }
        return made[key]

    return make


def write_archive(root, with_bad_file: bool = True):
    for name, (width, height, seed) in GOOD_IMAGES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(width, height, seed=seed))
    (root / ROTATED).write_bytes(_exif_rotated_jpeg())
    if with_bad_file:
        (root / "photos" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def scan(source, output, checkpoints, **options):
    return run_scan(ScanConfig(source=str(source), output=str(output), classifier_checkpoint=checkpoints["classifier"],
                               segmenter_checkpoint=checkpoints["segmenter"], batch_size=8, show_progress=False,
                               **options))


class DomElements(HTMLParser):
    """Every start tag of a page with its attributes, in document order."""

    def __init__(self, page: str):
        super().__init__()
        self.page = page
        self.elements: list[tuple[str, dict]] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def having(self, tag: str, **attributes) -> list[dict]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attributes.items()}
        return [a for t, a in self.elements if t == tag and all(
            (k in a) if v is True else a.get(k) == v for k, v in wanted.items())]


def rendered_dom(html_path) -> DomElements:
    """The page as headless Chromium builds it (Debian's `chromium`, installed by `make test`)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("Debian's chromium is needed to render the report: `apt-get install -y chromium` (make test does)")
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html_path.as_uri()],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<html" in result.stdout
    return DomElements(result.stdout)


def data_uri_image(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def summary_counts(page: str) -> dict[str, int]:
    """data-count cells of the summary table: name -> number shown."""
    found = {}

    class Cells(HTMLParser):
        current = None

        def handle_starttag(self, tag, attrs):
            self.current = dict(attrs).get("data-count") if tag == "td" else None

        def handle_data(self, data):
            if self.current and data.strip():
                found[self.current] = int(data.strip())
                self.current = None

    Cells().feed(page)
    return found


def render(output, html_path, *options) -> str:
    assert forgescan(["report", str(output), "--html", str(html_path), *options]) == 0
    return html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def two_scans(ray_local, checkpoints_judging, tmp_path_factory):
    """One archive scanned twice: first every image judged manipulated, then (--full) every image ai_generated
    with its manipulation score under the `manipulated` threshold (so no mask is written)."""
    root = tmp_path_factory.mktemp("two_scans")
    archive = write_archive(root / "archive")
    output = root / "out"
    manipulated = scan(archive, output, checkpoints_judging(ai=NEVER, manipulated=ALWAYS))
    generated = scan(archive, output, checkpoints_judging(ai=ALWAYS, manipulated=NEVER), full=True)
    return {"archive": archive, "output": output, "manipulated": manipulated.scan_id, "generated": generated.scan_id}


def test_report_of_one_scan_shows_counts_thumbnails_and_finding_overlays_in_chromium(two_scans, tmp_path):
    html_path = tmp_path / "report.html"
    render(two_scans["output"], html_path, "--scan-id", two_scans["manipulated"])
    page = rendered_dom(html_path)
    text = page.page
    assert summary_counts(text) == {"rows": 5, "objects": 5, "ok": 4, "errors": 1, "flagged": 4}
    assert page.having("b", id="view", data_view="scan")
    assert [a["data-error-kind"] for a in page.having("tr", data_error_kind=True)] == ["not_an_image"]
    rows = page.having("tr", class_="finding-row")
    assert len(rows) == 4 and {r["data-verdict"] for r in rows} == {"manipulated"}
    assert len(page.having("img", class_="picture")) == 4
    overlays = page.having("img", class_="overlay")
    assert len(overlays) == 4 and {o["data-mask-state"] for o in overlays} == {"finding"}
    for overlay in overlays:
        layer = data_uri_image(overlay["src"])
        assert layer.shape == (int(overlay["height"]), int(overlay["width"]), 4)
        assert (layer[..., 3] > 0).all()  # pixel threshold 0: the mask covers the whole image
        assert tuple(layer[0, 0, :3]) == MASK_COLOUR
    assert "manipulated ≥ 0<br>" in text and "ai_generated ≥ 1.01<br>" in text  # the thresholds it was judged by


def test_default_view_is_the_archive_and_a_score_under_the_threshold_has_no_mask_and_says_why(two_scans, tmp_path):
    html_path = tmp_path / "archive.html"
    render(two_scans["output"], html_path)
    page = rendered_dom(html_path)
    text = page.page
    assert page.having("b", id="view", data_view="archive")
    # Latest row per object: the second scan's verdicts, five objects (not ten rows).
    assert summary_counts(text) == {"rows": 5, "objects": 5, "ok": 4, "errors": 1, "flagged": 4}
    rows = page.having("tr", class_="finding-row")
    assert {r["data-verdict"] for r in rows} == {"ai_generated"} and len(rows) == 4
    assert {r["data-mask-state"] for r in rows} == {"empty"} and page.having("img", class_="overlay") == []
    assert text.count("no mask: manipulation score") == 4 and "threshold 1.010" in text and "manipulated ≥ 1.01" in text


def test_an_older_output_with_masks_under_the_threshold_draws_them_as_such(two_scans, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(two_scans["output"], output)
    with_whole_image_masks(output, two_scans["generated"])  # as scans before 7 Dec 2026 wrote every image's mask
    page = rendered_dom_of(output, tmp_path / "older.html", "--scan-id", two_scans["generated"])
    overlays = page.having("img", class_="overlay")
    assert len(overlays) == 4 and {o["data-mask-state"] for o in overlays} == {"below-threshold"}
    assert {tuple(data_uri_image(o["src"])[0, 0, :3]) for o in overlays} == {BELOW_THRESHOLD_COLOUR}
    assert "below threshold: manipulation score" in page.page


def test_report_filters_limit_verdict_and_min_score(two_scans, tmp_path):
    limited = rendered_dom_of(two_scans["output"], tmp_path / "limited.html", "--scan-id", two_scans["manipulated"],
                              "--limit", "2")
    assert len(limited.having("tr", class_="finding-row")) == 2
    authentic_only = rendered_dom_of(two_scans["output"], tmp_path / "authentic.html", "--verdict", "authentic")
    assert authentic_only.having("tr", class_="finding-row") == []
    assert authentic_only.having("p", data_notice="no-match")
    scores = sorted(max(r["ai_score"], r["manipulation_score"]) for r in pads.dataset(
        str(two_scans["output"]), partitioning="hive").to_table(filter=pc.field("status") == "ok").to_pylist()
        if r["scan_id"] == two_scans["generated"])
    middle = (scores[0] + scores[-1]) / 2
    assert scores[0] < middle < scores[-1]
    above = rendered_dom_of(two_scans["output"], tmp_path / "high.html", "--min-score", f"{middle}")
    assert len(above.having("tr", class_="finding-row")) == sum(score >= middle for score in scores)


def rendered_dom_of(output, html_path, *options) -> DomElements:
    render(output, html_path, *options)
    return rendered_dom(html_path)


def test_report_of_a_scan_with_no_flagged_images_says_so(ray_local, checkpoints_judging, tmp_path):
    archive = write_archive(tmp_path / "archive", with_bad_file=False)
    scan(archive, tmp_path / "out", checkpoints_judging(ai=NEVER, manipulated=NEVER))
    page = rendered_dom_of(tmp_path / "out", tmp_path / "r.html")
    assert page.having("p", data_notice="no-flagged")
    assert page.having("tr", class_="finding-row") == [] and page.having("img", class_="overlay") == []


def test_report_of_a_scan_with_only_error_rows_says_so(ray_local, checkpoints_judging, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "empty.jpg").write_bytes(b"")
    (archive / "page.jpg").write_bytes(b"<html>not an image</html>")
    scan(archive, tmp_path / "out", checkpoints_judging(ai=ALWAYS, manipulated=ALWAYS))
    html_path = tmp_path / "r.html"
    render(tmp_path / "out", html_path)
    page = rendered_dom(html_path)
    assert page.having("p", data_notice="only-errors")
    assert summary_counts(page.page)["errors"] == 2
    assert {a["data-error-kind"] for a in page.having("tr", data_error_kind=True)} == {"empty", "not_an_image"}


def test_report_of_an_empty_scan_says_so(ray_local, checkpoints_judging, tmp_path):
    (tmp_path / "archive").mkdir()
    scan(tmp_path / "archive", tmp_path / "out", checkpoints_judging(ai=ALWAYS, manipulated=ALWAYS))
    assert rendered_dom_of(tmp_path / "out", tmp_path / "r.html").having("p", data_notice="empty")


def test_report_after_the_source_images_were_deleted_still_draws_the_masks(ray_local, checkpoints_judging, tmp_path):
    archive = write_archive(tmp_path / "archive", with_bad_file=False)
    scan(archive, tmp_path / "out", checkpoints_judging(ai=NEVER, manipulated=ALWAYS))
    shutil.rmtree(archive)
    page = rendered_dom_of(tmp_path / "out", tmp_path / "r.html")
    assert page.having("p", data_notice="sources-missing")
    rows = page.having("tr", class_="finding-row")
    assert len(rows) == 4 and {r["data-image-state"] for r in rows} == {"missing"}
    assert len(page.having("img", class_="overlay", data_mask_state="finding")) == 4


def test_report_reads_output_and_images_from_s3(ray_local, checkpoints_judging, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="report-archive")
    s3.create_bucket(Bucket="report-results")
    for name, (width, height, seed) in GOOD_IMAGES.items():
        s3.put_object(Bucket="report-archive", Key=name, Body=jpeg_bytes(width, height, seed=seed))
    scan("s3://report-archive/photos", "s3://report-results/scans", checkpoints_judging(ai=NEVER, manipulated=ALWAYS),
         endpoint_url=s3_endpoint)
    html_path = tmp_path / "r.html"
    render("s3://report-results/scans", html_path, "--endpoint-url", s3_endpoint)
    page = rendered_dom(html_path)
    rows = page.having("tr", class_="finding-row")
    assert len(rows) == 3 and {r["data-image-state"] for r in rows} == {"ok"}
    assert {r["data-uri"] for r in rows} == {f"s3://report-archive/{n}" for n in GOOD_IMAGES}
    assert len(page.having("img", class_="overlay", data_mask_state="finding")) == 3


def test_report_reads_images_through_the_endpoint_the_scan_recorded(ray_local, checkpoints_judging, s3, s3_endpoint,
                                                                    tmp_path):
    s3.create_bucket(Bucket="report-recorded")
    for name, (width, height, seed) in GOOD_IMAGES.items():
        s3.put_object(Bucket="report-recorded", Key=name, Body=jpeg_bytes(width, height, seed=seed))
    output = tmp_path / "out"
    scan("s3://report-recorded/photos", output, checkpoints_judging(ai=NEVER, manipulated=ALWAYS), endpoint_url=s3_endpoint)
    html = render(output, tmp_path / "r.html")  # no --endpoint-url (and no AWS_ENDPOINT_URL): the manifest's is used
    assert html.count('class="finding-row"') == 3 and html.count('data-image-state="ok"') == 3


def test_report_of_an_output_without_scans_names_the_fix(s3, s3_endpoint, capsys):
    s3.create_bucket(Bucket="report-nothing")
    assert forgescan(["report", "s3://report-nothing/out", "--endpoint-url", s3_endpoint]) == 2
    assert "forgescan scan" in capsys.readouterr().err


def test_png_contact_sheet_still_renders(two_scans, tmp_path):
    picture = tmp_path / "sheet.png"
    assert forgescan(["report", str(two_scans["output"]), "--html", str(tmp_path / "r.html"),
                      "--picture", str(picture)]) == 0
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width >= 256


def test_summary_prints_the_counts_of_each_scan_and_of_the_archive(two_scans, capsys):
    assert forgescan(["summary", str(two_scans["output"])]) == 0
    out = capsys.readouterr().out
    table = {line.split()[0]: line.split()[4:] for line in out.splitlines() if line.startswith("scan-")}
    # rows, ok, errors, then verdicts ai_generated, manipulated, authentic, error
    assert table == {two_scans["manipulated"]: ["5", "4", "1", "0", "4", "0", "1"],
                     two_scans["generated"]: ["5", "4", "1", "4", "0", "0", "1"]}
    assert f"{two_scans['generated']} error kinds: not_an_image 1" in out
    assert "latest row per object across 2 complete scans" in out
    assert "objects 5, ok 4, errors 1; verdicts ai_generated 4, error 1" in out


def test_summary_json_matches_the_table(two_scans, capsys):
    assert forgescan(["summary", str(two_scans["output"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["scan_id"] for s in summary["scans"]] == [two_scans["manipulated"], two_scans["generated"]]
    assert summary["scans"][0]["verdicts"] == {"error": 1, "manipulated": 4}
    assert summary["archive"]["verdicts"] == {"ai_generated": 4, "error": 1} and summary["archive"]["objects"] == 5


def test_summary_of_an_output_without_scans_names_the_fix(tmp_path, capsys):
    assert forgescan(["summary", str(tmp_path / "nothing")]) == 2
    assert "run `forgescan scan SOURCE --output" in capsys.readouterr().err


def test_notebook_loads_an_output_as_pyarrow_pandas_and_polars(two_scans):
    from pipeline import notebook

    output = str(two_scans["output"])
    everything = notebook.load(output)
    assert everything.num_rows == 10 and set(everything.column("scan_id").to_pylist()) == {
        two_scans["manipulated"], two_scans["generated"]}
    frame = notebook.load(output, as_="pandas", scan_id=two_scans["manipulated"])
    assert len(frame) == 5 and set(frame["scan_id"]) == {two_scans["manipulated"]}
    latest = notebook.load(output, as_="polars", latest=True, columns=["uri", "verdict", "scan_id"])
    assert latest.height == 5 and set(latest["scan_id"]) == {two_scans["generated"]}
    assert sorted(latest["verdict"]) == ["ai_generated"] * 4 + ["error"]


def test_notebook_decodes_masks_from_every_table_kind_in_display_orientation(two_scans):
    from pipeline import notebook

    output = str(two_scans["output"])
    rotated_uri = (two_scans["archive"] / ROTATED).as_uri()
    rows = [
        next(r for r in notebook.load(output).to_pylist() if r["uri"] == rotated_uri),
        notebook.load(output, as_="pandas").set_index("uri", drop=False).loc[rotated_uri].iloc[0],
        next(r for r in notebook.load(output, as_="polars").iter_rows(named=True) if r["uri"] == rotated_uri),
    ]
    for row in rows:
        mask = notebook.decode_mask(row)
        assert mask.dtype == np.uint8 and mask.shape == (100, 40)  # displayed 40 wide, 100 high: after EXIF rotation
        assert mask.all()  # pixel threshold 0
    assert notebook.read_image(rotated_uri).shape == (100, 40, 3)
    error_row = next(r for r in notebook.load(output).to_pylist() if r["status"] == "error")
    with pytest.raises(ValueError, match="has no mask"):
        notebook.decode_mask(error_row)


def test_notebook_overlay_tints_the_masked_pixels_of_the_image(two_scans):
    from pipeline import notebook

    row = next(r for r in notebook.load(str(two_scans["output"]), scan_id=two_scans["manipulated"]).to_pylist()
               if r["uri"].endswith("photos/a.jpg"))
    image = notebook.read_image(row["uri"])
    picture = notebook.overlay(row, opacity=0.5)
    assert picture.shape == image.shape == (80, 120, 3)
    inner = (slice(5, -5), slice(5, -5))  # inside the outlined bounding box
    expected = np.round(image[inner].astype(np.float32) * 0.5 + np.asarray(MASK_COLOUR, np.float32) * 0.5)
    assert np.abs(picture[inner].astype(np.float32) - expected).max() <= 1
    with pytest.raises(ValueError, match="mask is 120x80"):
        notebook.overlay(row, image=np.zeros((10, 10, 3), np.uint8))


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(heading: str, language: str) -> str:
    """The first ```language block after `heading` in the README, verbatim."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match, f"no {language} block under {heading!r} in README.md"
    return match.group(1)


def test_readme_duckdb_queries_run_against_a_real_scan_also_after_forgescan_duplicates(two_scans, tmp_path):
    import shutil

    import duckdb

    from pipeline.duplicates import DuplicatesConfig, find_duplicate_groups

    output = tmp_path / "out"
    shutil.copytree(two_scans["output"], output)
    find_duplicate_groups(DuplicatesConfig(output=str(output)))  # writes _forgescan/duplicates/*.parquet beside the scans
    assert list(output.glob("_forgescan/duplicates/*.parquet"))
    queries = [q.strip() for q in readme_block("### Querying with DuckDB", "sql").split(";") if q.strip()]
    assert len(queries) == 3
    verdicts, top_manipulated, latest = (duckdb.sql(q.replace("DEST", str(output))).fetchall() for q in queries)
    first, second = two_scans["manipulated"], two_scans["generated"]
    assert verdicts == [(first, "error", 1), (first, "manipulated", 4), (second, "ai_generated", 4), (second, "error", 1)]
    rows = pads.dataset(str(output), partitioning="hive").to_table().to_pylist()
    expected = sorted(((r["uri"], r["manipulation_score"]) for r in rows
                       if r["verdict"] == "manipulated" and r["mask_area"] > 0.05), key=lambda p: (-p[1], p[0]))
    assert [(uri, pytest.approx(score)) for uri, score, *_ in top_manipulated] == expected and len(expected) == 4
    assert all(area == 1.0 and scan_id == first for _, _, area, _, scan_id in top_manipulated)
    assert [(uri, verdict, scan_id) for uri, verdict, _, _, scan_id, _ in latest] == sorted(
        (r["uri"], r["verdict"], second) for r in rows if r["scan_id"] == second)


def test_readme_pycocotools_snippet_decodes_a_real_mask(two_scans):
    import pyarrow.parquet as pq

    snippet = readme_block("### Decoding masks", "python").replace('"DEST"', repr(str(two_scans["output"])))
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the README's own code, run as a reader would
    row, mask = namespace["row"], namespace["mask"]
    assert mask.shape == (row["height"], row["width"]) and mask.dtype == np.uint8
    assert mask.mean() == pytest.approx(row["mask_area"])
    [part] = list((two_scans["output"] / f"scan_id={row['scan_id']}").glob("*.parquet"))
    metadata = pq.read_schema(part).metadata
    assert b"column-major" in metadata[b"forgescan.mask_rle"]
    assert b"after EXIF rotation" in metadata[b"forgescan.mask_orientation"]


def with_whole_image_masks(output, scan_id: str) -> None:
    """Rewrite one scan's ok rows with a mask over the whole image, whatever their scores."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from forensics.masks import encode_mask

    for part in (output / f"scan_id={scan_id}").glob("*.parquet"):
        table = pq.read_table(part)
        masks = [None if row["status"] != "ok" else
                 {"size": list(rle.size), "counts": rle.counts}
                 for row in table.to_pylist()
                 for rle in [encode_mask(np.ones((row["height"] or 1, row["width"] or 1), bool))]]
        index = table.column_names.index("mask_rle")
        table = table.set_column(index, table.schema.field("mask_rle"), pa.array(masks, table.schema.field("mask_rle").type))
        pq.write_table(table, part)


def with_per_class_masks(output, scan_id: str) -> None:
    """Rewrite one scan's files as a multi-class segmenter writes them: a `mask_classes` list beside `mask_rle`
    (left half of each mask `spliced`, right half `copy_move`) and the dominant `manipulation_type`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from forensics.masks import decode_mask, encode_mask

    rle_type = pa.struct([pa.field("size", pa.list_(pa.int32())), pa.field("counts", pa.string())])
    class_type = pa.struct([pa.field("class_id", pa.int32()), pa.field("name", pa.string()),
                            pa.field("mask_rle", rle_type), pa.field("area", pa.float32())])
    for part in (output / f"scan_id={scan_id}").glob("*.parquet"):
        table = pq.read_table(part)
        table = table.drop_columns([c for c in ("mask_classes", "manipulation_type") if c in table.column_names])
        classes, dominant = [], []
        for row in table.to_pylist():
            if row["mask_rle"] is None:
                classes.append(None)
                dominant.append(None)
                continue
            mask = decode_mask(row["mask_rle"]).astype(bool)
            half = mask.shape[1] // 2
            left, right = mask.copy(), mask.copy()
            left[:, half:] = False
            right[:, :half] = False
            entries = [{"class_id": i + 1, "name": name, "mask_rle": {"size": list(rle.size), "counts": rle.counts},
                        "area": float(m.mean())}
                       for i, (name, m) in enumerate((("spliced", left), ("copy_move", right)))
                       for rle in [encode_mask(m)]]
            classes.append(entries)
            dominant.append("spliced" if left.sum() >= right.sum() else "copy_move")
        table = table.append_column(pa.field("mask_classes", pa.list_(class_type)), pa.array(classes, pa.list_(class_type)))
        table = table.append_column("manipulation_type", pa.array(dominant, pa.string()))
        pq.write_table(table, part)


def test_report_colours_each_manipulation_type_when_the_output_has_per_class_masks(two_scans, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(two_scans["output"], output)
    with_per_class_masks(output, two_scans["manipulated"])
    page = rendered_dom_of(output, tmp_path / "r.html", "--scan-id", two_scans["manipulated"])
    overlays = page.having("img", class_="overlay", data_mask_state="finding")
    assert len(overlays) == 4
    for overlay in overlays:
        layer = data_uri_image(overlay["src"])
        width = layer.shape[1]
        left, right = {tuple(p) for p in layer[:, : width // 2 - 1, :3].reshape(-1, 3)}, \
            {tuple(p) for p in layer[:, width // 2 + 1:, :3].reshape(-1, 3)}
        assert len(left) == 1 and len(right) == 1 and left != right  # one colour per type, two types
    assert "spliced" in page.page and "copy_move" in page.page and page.having("p", id="legend")
    from pipeline import notebook

    row = notebook.load(str(output), scan_id=two_scans["manipulated"]).filter(pc.field("status") == "ok").to_pylist()[0]
    by_type = notebook.decode_class_masks(row)
    assert set(by_type) == {"spliced", "copy_move"}
    assert np.array_equal(by_type["spliced"] | by_type["copy_move"], notebook.decode_mask(row))
    # The older scan of the same output has no such column: its report still renders, in one colour.
    with_whole_image_masks(output, two_scans["generated"])
    older = rendered_dom_of(output, tmp_path / "older.html", "--scan-id", two_scans["generated"])
    overlays = older.having("img", class_="overlay", data_mask_state="below-threshold")
    assert len(overlays) == 4 and {tuple(data_uri_image(o["src"])[0, 0, :3]) for o in overlays} == {BELOW_THRESHOLD_COLOUR}


@pytest.mark.parametrize("command", ["summary", "report"])
def test_an_unreachable_store_gives_one_message_with_the_fix(command, capsys):
    assert forgescan([command, "s3://forgescan-nowhere/out", "--endpoint-url", "http://127.0.0.1:9"]) == 2
    assert "Cannot reach the object store for s3://forgescan-nowhere/out" in capsys.readouterr().err
