"""DuckDB store: schema migrations, columnar writes, queries and export.

Imports no model code: it knows items, labels, probabilities and runs as data.
"""
from store.errors import CotrainError, StoreError, StoreLockedError
from store.database import Store

__all__ = ["CotrainError", "Store", "StoreError", "StoreLockedError"]
