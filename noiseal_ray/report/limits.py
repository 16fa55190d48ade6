"""The report's caps and colours: how much of a large run it shows, and how it paints R/P/H."""

from __future__ import annotations

PART_NAMES = ("R", "P", "H")
PART_LABELS = {"R": "R (clean)", "P": "P (purified)", "H": "H (hard)"}
PART_COLORS = {"R": "#2e7d32", "P": "#ef6c00", "H": "#5e35b1"}
CLEAN_COLORS = {"truly clean": "#1976d2", "truly noisy": "#c62828"}
HEATMAP_MAX = 30      # classes shown in the transition heatmap / noise plot
TABLE_MAX = 50        # classes listed in the per-class table
TOP_ROWS = 25         # rows in the corrections / doubtful tables
MAX_ROUND_PLOTS = 8   # rounds with confidence histograms
FINE_BINS = 500       # streaming histogram resolution on [0, 1]
TEXT_CHARS = 300      # a sample's text is cut to this many characters in the review tables
