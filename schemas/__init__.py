"""The layouts and checks of the tables and datasets: ``raw.py`` and ``examples.py`` (Pandera,
polars back end: the raw table, the examples tables and shards), ``columns.py`` (the examples
and shard columns, declared once), ``manifest.py`` (a dataset folder and its manifest)."""
