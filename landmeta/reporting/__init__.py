"""Comparison reports from a results folder: tables, shot curves, a region map, qualitative examples."""
