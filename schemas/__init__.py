"""Pandera (polars back end) schemas, one per table kind."""
