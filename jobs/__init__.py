"""Thin entry points: each job is `python -m jobs.<name>` and a `forgescan <name>` sub-command."""
