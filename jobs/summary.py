"""`forgescan summary DEST`: the counts of every scan in an output, and of the archive's current state, in the terminal."""

from __future__ import annotations

import argparse
import json
import sys

from forensics.verdict import AI_GENERATED, AUTHENTIC, ERROR, MANIPULATED
from pipeline.results import ARCHIVE_VIEW, ResultsError, ScanResults
from pipeline.storage import StorageError, resolve_endpoint_url

VERDICT_COLUMNS = (AI_GENERATED, MANIPULATED, AUTHENTIC, ERROR)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="a scan's output prefix (what was passed to scan --output)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint for the output (as for scan)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")


def summarise(results: ScanResults) -> dict:
    """Per scan (manifest order) and for the archive's current state: rows, ok, errors, verdicts, error kinds."""
    per_scan = results.counts_per_scan()
    scans = []
    for manifest in results.manifests:
        counts = per_scan.get(manifest.scan_id)
        scans.append({"scan_id": manifest.scan_id, "state": manifest.state, "mode": manifest.mode,
                      "source": manifest.source, "started_at": manifest.started_at, "finished_at": manifest.finished_at,
                      "rows": counts.rows, "ok": counts.ok, "errors": counts.errors, "verdicts": counts.verdicts,
                      "error_kinds": counts.error_kinds})
    archive = None
    if results.complete_scans:
        selection = results.select(ARCHIVE_VIEW)
        counts = results.counts(selection)
        archive = {"description": selection.description, "objects": counts.objects, "rows": counts.rows, "ok": counts.ok,
                   "errors": counts.errors, "verdicts": counts.verdicts, "error_kinds": counts.error_kinds}
    return {"output": results.location.uri, "scans": scans, "archive": archive}


def format_table(summary: dict) -> str:
    header = ["scan", "state", "mode", "finished", "rows", "ok", "errors", *VERDICT_COLUMNS]
    lines = [[s["scan_id"], s["state"], s["mode"], (s["finished_at"] or "-")[:19], s["rows"], s["ok"], s["errors"],
              *(s["verdicts"].get(v, 0) for v in VERDICT_COLUMNS)] for s in summary["scans"]]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    numeric = set(range(4, len(header)))

    def row(cells):
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"output {summary['output']}", row(header)] + [row(line) for line in lines]
    for scan in summary["scans"]:
        if scan["error_kinds"]:
            out.append(f"  {scan['scan_id']} error kinds: " + ", ".join(f"{k} {n}" for k, n in scan["error_kinds"].items()))
    archive = summary["archive"]
    if archive is None:
        out.append("no complete scan yet: the archive's current state is unknown")
    else:
        verdicts = ", ".join(f"{v} {n}" for v, n in archive["verdicts"].items()) or "none"
        out.append(f"{archive['description']}:")
        out.append(f"  objects {archive['objects']}, ok {archive['ok']}, errors {archive['errors']}; verdicts {verdicts}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    try:
        results = ScanResults(args.output, resolve_endpoint_url(args.endpoint_url))
        if not results.manifests:
            raise ResultsError(f"No scans under {results.location.uri}: run `forgescan scan SOURCE --output "
                               f"{results.location.uri}` first (or check the path and --endpoint-url).")
        summary = summarise(results)
    except (ResultsError, StorageError) as error:
        print(f"forgescan: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_table(summary))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module("jobs.summary"))
