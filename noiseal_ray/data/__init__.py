"""Corpus I/O and synthetic label noise."""
