"""Helpers every layer may use: array handling and validation, strict JSON, factories."""
