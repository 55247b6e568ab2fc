"""Data: the ``Sample`` type, one loader/writer per native format, the synthetic generator,
preprocessing and the per-site cache."""
