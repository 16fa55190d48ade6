"""The run report: one self-contained ``report.html`` (inline CSS, plots as base64 PNG).

    noiseal-ray report runs/demo                 # writes runs/demo/report.html
    python -c "from noiseal_ray.report import write_report; write_report(run_dir='runs/demo')"

How it is built, one module per step: ``read`` checks and reads the run directory; ``stats``
streams its parquet tables into histograms and per-class counts; ``data`` gathers both into a
``RunData``; ``summary`` and ``tables`` turn that into formatted text rows (``fmt`` writes the
numbers); ``figures`` draws the plots; ``render`` fills ``noiseal_ray/templates/report.html.j2``,
autoescaped, so every string taken from the run (texts, ids, label names, paths) is HTML-escaped.
Large label sets are capped (``limits``: heatmap 30 classes, tables 50); the report says so.
"""

from noiseal_ray.report.limits import HEATMAP_MAX, TABLE_MAX
from noiseal_ray.report.read import iter_batches, open_run, read_config, read_json
from noiseal_ray.report.render import build_report, write_report

__all__ = ["HEATMAP_MAX", "TABLE_MAX", "build_report", "iter_batches", "open_run", "read_config", "read_json",
           "write_report"]
