"""Faust agents of the pipeline worker."""
