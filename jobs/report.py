"""`forgescan report DEST`: summarise a scan and render its most suspicious images with their masks."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from forensics.masks import decode_mask
from forensics.visualize import contact_sheet, overlay_mask
from pipeline import schema
from pipeline.state import COMPLETE, ScanState
from pipeline.storage import parse_location, read_object, storage_options_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="a scan's output prefix (what was passed to scan --output)")
    parser.add_argument("--scan-id", help="which scan (default: the latest complete one)")
    parser.add_argument("--top", type=int, default=12, help="how many suspicious images to render (default 12)")
    parser.add_argument("--picture", type=Path, help="where to write the PNG (default: OUTPUT/_forgescan/reports/<scan id>.png for local outputs)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for the output and the images")


def suspicious_rows(state: ScanState, scan_id: str, top: int) -> list[dict]:
    table = state.scan_rows(scan_id, [schema.URI, schema.STATUS, schema.VERDICT, schema.AI_SCORE,
                                      schema.MANIPULATION_SCORE, schema.MASK_RLE, schema.MASK_AREA])
    rows = [r for r in table.to_pylist() if r[schema.STATUS] == schema.STATUS_OK]
    rows.sort(key=lambda r: max(r[schema.AI_SCORE] or 0, r[schema.MANIPULATION_SCORE] or 0), reverse=True)
    return rows[:top]


def render_findings(rows: list[dict], endpoint_url: str | None) -> bytes:
    tiles = []
    for row in rows:
        data, _ = read_object(row[schema.URI], endpoint_url, storage_options_key(None))
        image = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        mask = decode_mask(row[schema.MASK_RLE])
        name = row[schema.URI].rsplit("/", 1)[-1]
        caption = (f"{name}\n{row[schema.VERDICT]} ai {row[schema.AI_SCORE]:.2f} "
                   f"manip {row[schema.MANIPULATION_SCORE]:.2f} area {row[schema.MASK_AREA]:.2f}")
        tiles.append((overlay_mask(image, mask), caption))
    return contact_sheet(tiles)


def run(args: argparse.Namespace) -> int:
    output = parse_location(args.output)
    state = ScanState(output, args.endpoint_url, None)
    manifests = state.manifests()
    if args.scan_id:
        chosen = next((m for m in manifests if m.scan_id == args.scan_id), None)
    else:
        chosen = next((m for m in reversed(manifests) if m.state == COMPLETE), None)
    if chosen is None:
        print(f"forgescan: error: no {'scan ' + args.scan_id if args.scan_id else 'complete scan'} under {output.uri}; "
              "run `forgescan scan` first or pass --scan-id", file=sys.stderr)
        return 2
    counts = chosen.counts or state.count_rows(chosen.scan_id)
    print(f"scan {chosen.scan_id}: {chosen.state}, source {chosen.source}")
    print(f"  rows {counts.get('rows')}, ok {counts.get('ok')}, errors {counts.get('errors')}, verdicts {counts.get('verdicts')}")
    rows = suspicious_rows(state, chosen.scan_id, args.top)
    if not rows:
        print("  no ok rows to render")
        return 0
    picture = args.picture
    if picture is None:
        if output.protocol != "file":
            print("  pass --picture PATH to render the findings of a remote output")
            return 0
        picture = Path(output.path) / "_forgescan" / "reports" / f"{chosen.scan_id}.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    picture.write_bytes(render_findings(rows, args.endpoint_url))
    print(f"  the {len(rows)} most suspicious images with their masks: {picture}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.report"))
