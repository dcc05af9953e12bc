"""The Ray Data graph: list sources, fetch and decode, run the models, write Parquet, resume."""

import importlib

_EXPORTS = {"ScanConfig": "pipeline.config", "ScanSummary": "pipeline.scan", "run_scan": "pipeline.scan"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # lazy: Ray workers importing pipeline.stages must not import torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
