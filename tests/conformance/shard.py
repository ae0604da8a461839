"""pytest plugin: keep one shard of the collected cases, ``TL_SHARD=I/N`` (crc32 of the node id mod N),
so one test file can run in several processes (``sharded.sh``)."""

from __future__ import annotations

import os
import zlib
from typing import Any

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: Any, config: Any, items: list) -> None:
    index, count = (int(x) for x in os.environ.get("TL_SHARD", "0/1").split("/"))
    if count <= 1:
        return
    keep = [it for it in items if zlib.crc32(it.nodeid.encode()) % count == index]
    kept = set(map(id, keep))
    dropped = [it for it in items if id(it) not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
