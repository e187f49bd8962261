"""MongoDB persistence: the client, indexes and one repository module per aggregate."""

from store.mongo import Store, connect, ensure_indexes

__all__ = ["Store", "connect", "ensure_indexes"]
