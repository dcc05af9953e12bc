"""A self-contained HTML report of a scan output: counts, error kinds, score histograms and the flagged images.

Everything the page needs is inside the file (styles, thumbnails and mask
layers as data URIs), so it can be mailed or attached to a ticket. Only the
rows shown are read in full; their images are read from where the scan found
them, and a mask is drawn as a finding only when its image was judged
manipulated by the thresholds recorded for its scan.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import forensics
import numpy as np
from PIL import Image, ImageOps

from forensics.masks import decode_mask
from forensics.model_card import CLASSIFIER, SEGMENTER, ModelCard
from forensics.visualize import BELOW_THRESHOLD_COLOUR, MASK_COLOUR, TYPE_COLOURS, contact_sheet, mask_layer, png_bytes
from pipeline import schema
from pipeline.results import (FLAGGED_VERDICTS, HISTOGRAM_BINS, Counts, ScanResults, Selection, class_mask_column,
                              decode_class_masks)
from pipeline.state import ScanManifest
from pipeline.storage import read_object, storage_options_key

THUMBNAIL_SIZE = 256
BUNDLED_CARDS = Path(forensics.__file__).parent / "checkpoints"  # the cards of the demo checkpoints
FINDING = "finding"
BELOW_THRESHOLD = "below-threshold"
EMPTY = "empty"
VERDICT_COLOURS = {"ai_generated": "#7b3fa0", "manipulated": "#d62728", "authentic": "#2ca02c", "error": "#7f7f7f"}


@dataclass
class Thumbnail:
    """One flagged row as drawn: its picture, its mask layer and what they mean."""

    row: dict
    thresholds: dict
    image_state: str  # ok | missing | unreadable | changed
    image_note: str
    image: Image.Image  # RGB, display orientation, fitted into the thumbnail size (a blank canvas when unreadable)
    mask_state: str  # finding | below-threshold | empty
    mask_note: str
    layer: np.ndarray | None  # RGBA mask layer of the image's size, None when the mask is empty
    types: list[tuple[str, str, float | None]] = field(default_factory=list)  # (name, css colour, area)

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def picture(self) -> str:
        buffer = io.BytesIO()
        self.image.save(buffer, format="JPEG", quality=85)
        return _data_uri(buffer.getvalue(), "image/jpeg")

    @property
    def overlay(self) -> str | None:
        return None if self.layer is None else _data_uri(png_bytes(self.layer), "image/png")

    @property
    def overlay_pixels(self) -> int:
        return 0 if self.layer is None else int((self.layer[..., 3] > 0).sum())

    def composite(self) -> np.ndarray:
        """The thumbnail with its mask layer flattened in (RGB uint8), for a PNG contact sheet."""
        if self.layer is None:
            return np.asarray(self.image)
        return np.asarray(Image.alpha_composite(self.image.convert("RGBA"), Image.fromarray(self.layer)).convert("RGB"))


def thresholds_for(manifest: ScanManifest | None) -> dict:
    """The thresholds a scan judged by: recorded in its manifest, else the bundled cards' when the versions match."""
    if manifest is not None and manifest.thresholds:
        return dict(manifest.thresholds)
    if manifest is None:
        return {}
    found = {}
    for kind, version, names in ((CLASSIFIER, manifest.classifier_version, ("ai_generated",)),
                                 (SEGMENTER, manifest.segmenter_version, ("manipulated", "pixel"))):
        path = BUNDLED_CARDS / f"{kind}.json"
        if not path.exists():
            continue
        card = ModelCard.read(path)
        if card.version == version:
            found.update({name: card.threshold(name) for name in names if name in card.thresholds})
    return found


def mask_state(row: dict, mask: np.ndarray, thresholds: dict) -> tuple[str, str]:
    """Whether the mask is a finding, with the reason in words: the verdict's threshold decides, not the pixels.
    Scans since 7 Dec 2026 write no mask below the threshold; older outputs may hold one (BELOW_THRESHOLD)."""
    pixel = thresholds.get("pixel")
    score = row.get(schema.MANIPULATION_SCORE)
    threshold = thresholds.get("manipulated")
    if not mask.any():
        if threshold is not None and score is not None and score < threshold:
            return EMPTY, f"no mask: manipulation score {score:.3f} < threshold {threshold:.3f}"
        return EMPTY, "no pixel above the pixel threshold" + (f" {pixel:.2f}" if pixel is not None else "")
    if threshold is not None and score is not None:
        if score >= threshold:
            return FINDING, f"manipulation score {score:.3f} ≥ threshold {threshold:.3f}"
        return BELOW_THRESHOLD, f"below threshold: manipulation score {score:.3f} < {threshold:.3f}"
    if row.get(schema.VERDICT) == "manipulated":
        return FINDING, "verdict manipulated (thresholds not recorded for this scan)"
    return BELOW_THRESHOLD, "below threshold: verdict is not manipulated (thresholds not recorded for this scan)"


def _data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def _load_picture(row: dict, endpoint_url: str | None, size: int) -> tuple[Image.Image | None, str, str]:
    """The row's image in display orientation, reduced to fit `size`; or None with the reason."""
    uri = row[schema.URI]
    try:
        data, _ = read_object(uri, endpoint_url, storage_options_key(None))
    except FileNotFoundError:
        return None, "missing", "source image no longer at its URI (deleted or moved); mask drawn on a blank canvas"
    except Exception as error:  # noqa: BLE001 - any storage failure is shown on the page, not raised
        return None, "unreadable", f"source image could not be read ({type(error).__name__}: {error})"[:300]
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a reduced scale, cheap for huge photos
        image = ImageOps.exif_transpose(image).convert("RGB")  # masks are in display orientation
        image.thumbnail((size, size))
    except Exception as error:  # noqa: BLE001
        return None, "unreadable", f"source image no longer decodes ({type(error).__name__}); mask drawn on a blank canvas"
    if row.get(schema.SHA256) and hashlib.sha256(data).hexdigest() != row[schema.SHA256]:
        return image, "changed", "source image changed since the scan (sha256 differs): the mask may not fit"
    return image, "ok", ""


def draw_thumbnail(row: dict, masks: dict, thresholds: dict, type_colours: dict[str, tuple[int, int, int]],
                   class_column: str | None, endpoint_url: str | None, size: int = THUMBNAIL_SIZE) -> Thumbnail:
    image, image_state, image_note = _load_picture(row, endpoint_url, size)
    rle = masks.get(schema.MASK_RLE)
    mask = decode_mask(rle) if rle and rle.get("counts") is not None else np.zeros((1, 1), dtype=np.uint8)
    if image is None:
        height, width = row.get(schema.HEIGHT) or mask.shape[0], row.get(schema.WIDTH) or mask.shape[1]
        scale = min(1.0, size / max(width, height))
        image = Image.new("RGB", (max(1, round(width * scale)), max(1, round(height * scale))), (225, 225, 225))
    state, note = mask_state(row, mask, thresholds)
    layers, types = [], []
    if state == FINDING:
        per_class = decode_class_masks(masks.get(class_column)) if class_column else []
        if per_class:
            for name, class_mask, area in per_class:
                if not class_mask.any():
                    continue
                colour = type_colours.setdefault(name, TYPE_COLOURS[len(type_colours) % len(TYPE_COLOURS)])
                layers.append((class_mask, colour))
                types.append((name, "rgb(%d,%d,%d)" % colour, area))
        else:
            layers.append((mask, MASK_COLOUR))
    elif state == BELOW_THRESHOLD:
        layers.append((mask, BELOW_THRESHOLD_COLOUR))
    return Thumbnail(row=row, thresholds=thresholds, image_state=image_state, image_note=image_note, image=image,
                     mask_state=state, mask_note=note, layer=mask_layer(layers, image.size) if layers else None,
                     types=types)


def histogram_svg(per_verdict: dict[str, list[int]], threshold: float | None, title: str, bins: int = HISTOGRAM_BINS) -> str:
    """Stacked bars per verdict over [0, 1] as inline SVG (only numbers and verdict words go into it)."""
    width, height, margin = 420, 160, 24
    totals = [sum(counts[i] for counts in per_verdict.values()) for i in range(bins)]
    peak = max(totals) if totals and max(totals) else 1
    bar = (width - 2 * margin) / bins
    parts = [f'<svg class="histogram" data-title="{title}" width="{width}" height="{height + 30}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img">']
    for index in range(bins):
        y = height
        for verdict, counts in per_verdict.items():
            if not counts[index]:
                continue
            h = (height - margin) * counts[index] / peak
            y -= h
            parts.append(f'<rect class="bar" data-verdict="{verdict}" data-count="{counts[index]}" x="{margin + index * bar:.1f}" '
                         f'y="{y:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" fill="{VERDICT_COLOURS.get(verdict, "#999")}">'
                         f'<title>{verdict}: {counts[index]} in [{index / bins:.2f}, {(index + 1) / bins:.2f})</title></rect>')
    parts.append(f'<line x1="{margin}" y1="{height}" x2="{width - margin}" y2="{height}" stroke="#333"/>')
    for tick in (0, 0.5, 1):
        parts.append(f'<text x="{margin + tick * (width - 2 * margin):.1f}" y="{height + 14}" font-size="11" '
                     f'text-anchor="middle">{tick:g}</text>')
    if threshold is not None:
        x = margin + threshold * (width - 2 * margin)
        anchor, offset = ("end", -3) if threshold > 0.6 else ("start", 3)
        parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{margin / 2}" x2="{x:.1f}" y2="{height}" stroke="#000" '
                     f'stroke-dasharray="4 3"/><text x="{x + offset:.1f}" y="{margin / 2 + 8}" font-size="11" '
                     f'text-anchor="{anchor}">threshold {threshold:.2f}</text>')
    parts.append(f'<text x="{width / 2}" y="{height + 28}" font-size="12" text-anchor="middle">{title}</text></svg>')
    return "".join(parts)


@dataclass(frozen=True)
class ReportRequest:
    """What to show: the selection, which verdicts, from which score, how many."""

    selection: Selection
    verdicts: tuple[str, ...] = FLAGGED_VERDICTS
    min_score: float = 0.0
    limit: int = 50
    endpoint_url: str | None = None
    thumbnail_size: int = THUMBNAIL_SIZE


def notices_for(counts: Counts, shown: list[Thumbnail], request: ReportRequest) -> list[tuple[str, str]]:
    """(kind, sentence) for the situations a reader must not have to infer from an empty table."""
    notices = []
    if counts.rows == 0:
        notices.append(("empty", "This selection has no rows: the scan listed no objects or committed nothing yet."))
    elif counts.ok == 0:
        notices.append(("only-errors", f"Every one of the {counts.rows} rows is an error row: no image could be analysed. "
                                       "See the error kinds below."))
    elif counts.flagged == 0 and set(request.verdicts) <= set(FLAGGED_VERDICTS):
        notices.append(("no-flagged", f"No flagged images: all {counts.ok} analysed images were judged authentic."))
    elif not shown:
        notices.append(("no-match", f"No row matches verdict {', '.join(request.verdicts)} with score ≥ {request.min_score:g}."))
    missing = sum(1 for t in shown if t.image_state in ("missing", "unreadable"))
    if missing:
        notices.append(("sources-missing", f"{missing} of the {len(shown)} images shown could not be read from where the "
                                           "scan found them (deleted, moved or unreadable); their masks are drawn on a blank canvas."))
    return notices


TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>forgescan report: {{ output }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.notice{background:#fff4ce;border:1px solid #e0c060;padding:.6em}
.thumb{position:relative;display:inline-block;line-height:0}.thumb img{display:block}
.thumb img.overlay{position:absolute;left:0;top:0}.state-below-threshold{color:#666}.state-finding{color:#c00;font-weight:600}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.uri{font-family:monospace;word-break:break-all;max-width:28em}.small{font-size:.85em;color:#555}
</style></head><body>
<h1>forgescan report</h1>
<p>Output <code>{{ output }}</code>; showing the <b id="view" data-view="{{ selection.view }}">{{ selection.description }}</b>.
Generated {{ generated }}. {% if selection.view == "archive" %}(Default view; pass <code>--scan-id ID</code> or <code>--view scan</code> for one scan.){% else %}(Pass <code>--view archive</code> for the latest row per object across all complete scans.){% endif %}</p>
{% for kind, text in notices %}<p class="notice" data-notice="{{ kind }}">{{ text }}</p>{% endfor %}
<section id="summary"><h2>Summary</h2><table>
<tr><th>rows</th><td data-count="rows">{{ counts.rows }}</td></tr>
<tr><th>objects</th><td data-count="objects">{{ counts.objects }}</td></tr>
<tr><th>ok</th><td data-count="ok">{{ counts.ok }}</td></tr>
<tr><th>errors</th><td data-count="errors">{{ counts.errors }}</td></tr>
<tr><th>flagged (ai_generated + manipulated)</th><td data-count="flagged">{{ counts.flagged }}</td></tr>
{% for verdict, n in counts.verdicts.items() %}<tr><th>verdict {{ verdict }}</th><td data-verdict="{{ verdict }}">{{ n }}</td></tr>{% endfor %}
</table>
<h3>Scans</h3><table><tr><th>scan</th><th>state</th><th>mode</th><th>source</th><th>finished</th><th>models</th><th>thresholds</th></tr>
{% for m in scans %}<tr data-scan="{{ m.scan_id }}"><td>{{ m.scan_id }}</td><td>{{ m.state }}</td><td>{{ m.mode }}</td><td class="uri">{{ m.source }}</td>
<td>{{ m.finished_at or "" }}</td><td class="small">{{ m.classifier_version }}<br>{{ m.segmenter_version }}</td>
<td class="small">{% for k, v in thresholds[m.scan_id].items() %}{{ k }} ≥ {{ threshold(v) }}<br>{% else %}not recorded{% endfor %}</td></tr>{% endfor %}
</table></section>
<section id="errors"><h2>Error kinds</h2>
{% if counts.error_kinds %}<table><tr><th>kind</th><th>rows</th></tr>
{% for kind, n in counts.error_kinds.items() %}<tr data-error-kind="{{ kind }}"><td>{{ kind }}</td><td>{{ n }}</td></tr>{% endfor %}</table>
{% else %}<p>No error rows.</p>{% endif %}</section>
<section id="histograms"><h2>Score histograms (ok rows)</h2>
{% for svg in histograms %}{{ svg|safe }}{% endfor %}
<p class="small">{% for verdict, colour in verdict_colours.items() %}<span class="swatch" style="background:{{ colour }}"></span>{{ verdict }} {% endfor %}</p></section>
<section id="findings"><h2>{{ findings_title }}</h2>
{% if type_colours %}<p id="legend">Manipulation types: {% for name, colour in type_colours.items() %}<span class="swatch" style="background:rgb{{ colour }}"></span>{{ name }} {% endfor %}
<span class="swatch" style="background:rgb{{ below_colour }}"></span>below threshold</p>
{% else %}<p id="legend"><span class="swatch" style="background:rgb{{ finding_colour }}"></span>mask of an image judged manipulated
<span class="swatch" style="background:rgb{{ below_colour }}"></span>mask below threshold (drawn, not a finding)</p>{% endif %}
<table id="flagged"><tr><th>#</th><th>image and mask</th><th>object</th><th>verdict</th><th>scores</th><th>judged by</th></tr>
{% for t in shown %}<tr class="finding-row" data-uri="{{ t.row.uri }}" data-verdict="{{ t.row.verdict }}" data-mask-state="{{ t.mask_state }}" data-image-state="{{ t.image_state }}">
<td>{{ loop.index }}</td>
<td><div class="thumb"><img class="picture" src="{{ t.picture }}" width="{{ t.width }}" height="{{ t.height }}" alt="{{ t.row.uri }}">
{% if t.overlay %}<img class="overlay" data-mask-state="{{ t.mask_state }}" data-overlay-pixels="{{ t.overlay_pixels }}" src="{{ t.overlay }}" width="{{ t.width }}" height="{{ t.height }}" alt="mask">{% endif %}</div>
<div class="small state-{{ t.mask_state }}">{{ t.mask_note }}</div>{% if t.image_note %}<div class="small" data-image-note>{{ t.image_note }}</div>{% endif %}
{% for name, colour, area in t.types %}<div class="small"><span class="swatch" style="background:{{ colour }}"></span>{{ name }}{% if area is not none %} {{ "%.1f"|format(100 * area) }}%{% endif %}</div>{% endfor %}</td>
<td class="uri">{{ t.row.uri }}<div class="small">{{ t.row.width }}×{{ t.row.height }} {{ t.row.format or "" }}, {{ t.row.size_bytes or "?" }} bytes<br>scan {{ t.row.scan_id }}<br>sha256 {{ (t.row.sha256 or "")[:16] }}…</div></td>
<td style="color:{{ verdict_colours.get(t.row.verdict, '#000') }}">{{ t.row.verdict }}{% if t.row.manipulation_type %}<div class="small" data-manipulation-type="{{ t.row.manipulation_type }}">type {{ t.row.manipulation_type }}</div>{% endif %}{% if t.row.reasons %}<div class="small">{{ t.row.reasons }}</div>{% endif %}</td>
<td>ai {{ fmt(t.row.ai_score) }}<br>manipulation {{ fmt(t.row.manipulation_score) }}<br>confidence {{ fmt(t.row.confidence) }}<br>mask area {{ pct(t.row.mask_area) }}</td>
<td class="small thresholds">{% for k, v in t.thresholds.items() %}{{ k }} ≥ {{ threshold(v) }}<br>{% else %}thresholds not recorded{% endfor %}
{{ t.row.classifier_version }}<br>{{ t.row.segmenter_version }}</td></tr>
{% endfor %}</table></section>
</body></html>
""")


def contact_sheet_png(shown: list[Thumbnail]) -> bytes:
    """The shown thumbnails with their mask layers flattened in, as one captioned PNG."""
    tiles = []
    for thumbnail in shown:
        row = thumbnail.row
        caption = (f"{row[schema.URI].rsplit('/', 1)[-1]}\n{row[schema.VERDICT]} ai {row[schema.AI_SCORE]:.2f} "
                   f"manip {row[schema.MANIPULATION_SCORE]:.2f} ({thumbnail.mask_state})")
        tiles.append((thumbnail.composite(), caption))
    return contact_sheet(tiles)


def render_report(results: ScanResults, request: ReportRequest) -> tuple[str, Counts, list[Thumbnail]]:
    """The HTML page, and the counts and thumbnails it shows."""
    selection = request.selection
    counts = results.counts(selection)
    histograms = results.histograms(selection)
    rows = results.top_rows(selection, request.verdicts, request.min_score, request.limit)
    masks = results.masks(rows)
    class_column = class_mask_column(results.dataset.schema) if results.dataset is not None else None
    scans = [m for m in results.manifests if m.scan_id in selection.scan_ids]
    thresholds = {m.scan_id: thresholds_for(m) for m in scans}
    type_colours: dict[str, tuple[int, int, int]] = {}
    # Images are read from where each scan found them: through --endpoint-url, else the endpoint its manifest recorded.
    endpoints = {m.scan_id: request.endpoint_url or m.endpoint_url for m in scans}
    shown = [draw_thumbnail(row, masks.get((row[schema.SCAN_ID], row[schema.URI]), {}), thresholds.get(row[schema.SCAN_ID], {}),
                            type_colours, class_column, endpoints.get(row[schema.SCAN_ID]), request.thumbnail_size)
             for row in rows]
    single = list(thresholds.values())[0] if len(set(map(str, thresholds.values()))) == 1 and thresholds else {}
    svgs = [histogram_svg(histograms[schema.AI_SCORE], single.get("ai_generated"), "ai_score"),
            histogram_svg(histograms[schema.MANIPULATION_SCORE], single.get("manipulated"), "manipulation_score")]
    title = (f"Flagged images ({len(shown)} shown of {counts.flagged}, highest score first)"
             if set(request.verdicts) <= set(FLAGGED_VERDICTS) else
             f"Rows with verdict {', '.join(request.verdicts)} ({len(shown)} shown, highest score first)")
    html = TEMPLATE.render(
        output=results.location.uri, selection=selection, counts=counts, scans=scans, thresholds=thresholds,
        notices=notices_for(counts, shown, request), histograms=svgs, shown=shown, findings_title=title,
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), verdict_colours=VERDICT_COLOURS,
        type_colours=type_colours, below_colour=BELOW_THRESHOLD_COLOUR, finding_colour=MASK_COLOUR,
        threshold=lambda v: f"{v:.3f}".rstrip("0").rstrip("."),
        fmt=lambda v: "–" if v is None else f"{v:.3f}", pct=lambda v: "–" if v is None else f"{100 * v:.1f}%")
    return html, counts, shown
