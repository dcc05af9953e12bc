"""The Ray Data graph: list sources, fetch and decode, run the models, write Parquet, resume."""

from pipeline.config import ScanConfig
from pipeline.scan import ScanSummary, run_scan

__all__ = ["ScanConfig", "ScanSummary", "run_scan"]
