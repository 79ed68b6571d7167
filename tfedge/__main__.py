"""``python -m tfedge`` runs the CLI."""

from tfedge.cli import entry

entry()
