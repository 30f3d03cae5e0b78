"""The version of ebjr, importable by every layer."""

__version__ = "0.1.0"
