"""`forgescan report DEST`: a self-contained HTML report (and optionally a PNG contact sheet) of a scan output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forensics.verdict import VERDICTS
from pipeline.html_report import ReportRequest, contact_sheet_png, render_report
from pipeline.results import ARCHIVE_VIEW, FLAGGED_VERDICTS, VIEWS, ResultsError, ScanResults
from pipeline.storage import StorageError, resolve_endpoint_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="a scan's output prefix (what was passed to scan --output)")
    parser.add_argument("--html", type=Path, help="where to write the HTML report (default: OUTPUT/_forgescan/reports/"
                                                  "<view>.html for local outputs)")
    parser.add_argument("--view", choices=VIEWS, default=ARCHIVE_VIEW,
                        help="archive (default): the latest row per object across all complete scans; "
                             "scan: the latest complete scan only")
    parser.add_argument("--scan-id", help="report this one scan (implies --view scan)")
    parser.add_argument("--limit", type=int, default=ReportRequest.limit,
                        help=f"how many images to show, highest score first (default {ReportRequest.limit})")
    parser.add_argument("--verdict", action="append", choices=VERDICTS,
                        help="verdicts to show; repeat for several (default: ai_generated and manipulated)")
    parser.add_argument("--min-score", type=float, default=ReportRequest.min_score,
                        help="only images whose larger score (ai or manipulation) is at least this "
                             f"(default {ReportRequest.min_score:g})")
    parser.add_argument("--picture", type=Path, help="also write a PNG contact sheet of the same images here")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for the output and the images (as for scan)")


def run(args: argparse.Namespace) -> int:
    if args.limit < 0:
        print(f"forgescan: error: --limit {args.limit}: the number of images to show must be 0 or more", file=sys.stderr)
        return 2
    if not 0.0 <= args.min_score <= 1.0:
        print(f"forgescan: error: --min-score {args.min_score:g}: scores are probabilities, pass a value between 0 and 1",
              file=sys.stderr)
        return 2
    endpoint_url = resolve_endpoint_url(args.endpoint_url)
    try:
        results = ScanResults(args.output, endpoint_url)
        selection = results.select(args.view, args.scan_id)
    except (ResultsError, StorageError) as error:
        print(f"forgescan: error: {error}", file=sys.stderr)
        return 2
    request = ReportRequest(selection=selection, verdicts=tuple(args.verdict or FLAGGED_VERDICTS),
                            min_score=args.min_score, limit=args.limit, endpoint_url=endpoint_url)
    html_path = args.html
    if html_path is None:
        if results.location.protocol != "file":
            print(f"forgescan: error: {results.location.uri} is not a local folder, so the report has no default "
                  "place: pass --html PATH (a local file)", file=sys.stderr)
            return 2
        name = selection.scan_ids[0] if selection.view != ARCHIVE_VIEW else "archive"
        html_path = Path(results.location.path) / "_forgescan" / "reports" / f"{name}.html"
    html, counts, shown = render_report(results, request)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(html, encoding="utf-8")
    verdicts = ", ".join(f"{v} {n}" for v, n in counts.verdicts.items()) or "none"
    print(f"{selection.description}")
    print(f"  rows {counts.rows}, objects {counts.objects}, ok {counts.ok}, errors {counts.errors}; verdicts {verdicts}")
    if counts.error_kinds:
        print("  error kinds " + ", ".join(f"{k} {n}" for k, n in counts.error_kinds.items()))
    print(f"  report with {len(shown)} image{'s' if len(shown) != 1 else ''}: {html_path}")
    if args.picture and shown:
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        args.picture.write_bytes(contact_sheet_png(shown))
        print(f"  contact sheet of the same {len(shown)} images: {args.picture}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.report"))
