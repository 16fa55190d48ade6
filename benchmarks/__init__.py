"""Benchmarks for noiseal-ray: denoising quality against baselines, and speed.

Run from the repository root::

    .venv/bin/noiseal-ray bench --grid smoke        # or: .venv/bin/python -m benchmarks.run --grid smoke

See benchmarks/RESULTS.md (the trec grid) and RESULTS-smoke.md (generated) for the tables and the exact commands.
"""
