"""The garbage collector of long-running services."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup() -> None:
    """Exempt what start-up made (modules, classes, functions: ~75,000 objects in the API)
    from the collector's full passes; call it once a service is ready.

    Those objects live as long as the process, yet every full collection walked them all:
    30-85 ms on the 2-core reference machine, a stall that every request in flight waited
    out (``bench/HISTORY.md``, 2026-11-25). What is made later is collected as before."""
    gc.collect()
    gc.freeze()
    log.debug("heap.frozen objects=%d", gc.get_freeze_count())
