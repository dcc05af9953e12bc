"""Helpers for analysts in notebooks: load a scan output as a table, decode a row's mask, draw it on its image.

```python
from pipeline import notebook

table = notebook.load("s3://forensics-results/archive", latest=True, endpoint_url=None)   # pyarrow.Table
frame = notebook.load("results/", as_="pandas", scan_id="scan-20261125T002340Z-ffa7d4")    # or as_="polars"
row = frame.iloc[0]                       # a pandas row, a polars `df.row(i, named=True)` or a pyarrow row dict
mask = notebook.decode_mask(row)          # numpy uint8 (height, width), display orientation (after EXIF rotation)
picture = notebook.overlay(row)           # RGB uint8 image with the mask tinted in; PIL.Image.fromarray(picture)
```

Masks are COCO RLE (column-major, `size = [height, width]`) at the image's
original resolution in display orientation, so they line up with the image
as `read_image` returns it (EXIF orientation applied).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow.compute as pc
from PIL import Image, ImageOps

from forensics import masks as _masks
from forensics.visualize import MASK_COLOUR, MASK_OPACITY, overlay_mask
from pipeline import results, schema
from pipeline.storage import read_object, resolve_endpoint_url, storage_options_key

FORMATS = ("pyarrow", "pandas", "polars")


def load(output: str, as_: str = "pyarrow", scan_id: str | None = None, latest: bool = False,
         columns: list[str] | None = None, endpoint_url: str | None = None, storage_options: dict | None = None):
    """Rows of a scan output as a pyarrow Table, a pandas DataFrame or a Polars DataFrame.

    Args:
        output: the scan's output prefix (local path, `file://`, `s3://`, `gs://`).
        as_: `pyarrow`, `pandas` or `polars`.
        scan_id: only this scan's rows.
        latest: only the latest row per object across complete scans (the archive's current state).
        columns: the columns to read (default all); filters are pushed down to Parquet.
        endpoint_url: S3-compatible endpoint, as for `forgescan scan`.
    """
    if as_ not in FORMATS:
        raise ValueError(f"Unknown format {as_!r}; choose one of {FORMATS}")
    scan_results = results.ScanResults(output, resolve_endpoint_url(endpoint_url), storage_options)
    if scan_results.dataset is None:
        table = schema.OUTPUT_SCHEMA.empty_table()
        table = table.select(columns) if columns else table
    elif latest:
        selection = scan_results.select(scan_id=scan_id) if scan_id else scan_results.select(results.ARCHIVE_VIEW)
        names = columns or scan_results.dataset.schema.names
        table = scan_results.connection.sql(scan_results.relation_sql(selection, list(names))).to_arrow_table()
    else:
        wanted = pc.field(schema.SCAN_ID) == scan_id if scan_id else None
        table = scan_results.dataset.to_table(columns=columns, filter=wanted)
    if as_ == "pandas":
        return table.to_pandas()
    if as_ == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table


def _field(row: Any, name: str) -> Any:
    try:
        return row[name]
    except (KeyError, IndexError):
        return None


def decode_mask(row: Any) -> np.ndarray:
    """The row's mask as a (height, width) uint8 array of 0/1, with pycocotools; `row` is a dict, pandas or Polars row."""
    rle = _field(row, schema.MASK_RLE)
    if rle is None or _field(rle, "counts") is None:
        raise ValueError(f"{_field(row, schema.URI)} has no mask (status {_field(row, schema.STATUS)}, "
                         f"error {_field(row, schema.ERROR)!r}): only ok rows carry one")
    return _masks.decode_mask({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})


def decode_class_masks(row: Any, column: str | None = None) -> dict[str, np.ndarray]:
    """Per manipulation type, its mask, when the output has a per-class mask column; {} otherwise."""
    column = column or next((name for name in _keys(row) if name != schema.MASK_RLE and _is_class_list(_field(row, name))), None)
    return {name: mask for name, mask, _ in results.decode_class_masks(_field(row, column) if column else None)}


def _keys(row: Any) -> list[str]:
    return list(row.keys()) if hasattr(row, "keys") else list(getattr(row, "index", []))


def _is_class_list(value: Any) -> bool:
    if value is None or isinstance(value, (str, bytes, dict)):
        return False
    try:
        first = next(iter(value), None)
    except TypeError:
        return False
    return isinstance(first, dict) and ("counts" in first or "rle" in first or "mask_rle" in first)


def read_image(uri: str, endpoint_url: str | None = None) -> np.ndarray:
    """The object at `uri` (local, S3, GCS) as RGB uint8, in display orientation like the masks."""
    data, _ = read_object(uri, resolve_endpoint_url(endpoint_url), storage_options_key(None))
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def overlay(row: Any, image: np.ndarray | None = None, endpoint_url: str | None = None, opacity: float = MASK_OPACITY,
            colour: tuple[int, int, int] = MASK_COLOUR) -> np.ndarray:
    """The row's image (read from its URI unless given) with its mask tinted in and its bounding box outlined."""
    mask = decode_mask(row)
    picture = read_image(_field(row, schema.URI), endpoint_url) if image is None else np.asarray(image)
    if picture.shape[:2] != mask.shape:
        raise ValueError(f"Image is {picture.shape[1]}x{picture.shape[0]} but the mask is {mask.shape[1]}x{mask.shape[0]}: "
                         "the source changed since the scan, or the image was not read in display orientation "
                         "(use notebook.read_image, which applies the EXIF rotation)")
    return overlay_mask(picture, mask, opacity=opacity, colour=colour)


__all__ = ["FORMATS", "load", "decode_mask", "decode_class_masks", "read_image", "overlay"]
