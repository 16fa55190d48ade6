"""Annotators relabel the purified set P given demonstrations retrieved from the clean set R."""
