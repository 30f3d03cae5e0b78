"""Runnable examples: the quickstart (``ebjr quickstart``)."""
