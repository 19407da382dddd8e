"""Keeps the compiler caches under KPT_CACHE_DIR within KPT_COMPILER_CACHE_MAX_BYTES.

Inductor's and Triton's caches, XLA's, MIOpen's and TunableOp's only grow; on a long-lived replica they would
fill the volume (and on Kubernetes get the pod evicted). After each job the worker drops the least recently
used files beyond the cap. Each of these caches treats a missing file as a miss and rebuilds it, so a dropped
file costs a recompile, never a result. Files written in the last TRIM_MIN_AGE_S are kept (a compile in
another worker may be writing them), and `aoti/` is left to its own cap (kpt.gpu.cache.MAX_PACKAGE_BYTES).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

OWN_CAP = ("aoti",)  # top-level folders trimmed by their owners
TRIM_MIN_AGE_S = 600.0


def trim(cache_dir: str, max_bytes: int, now: float | None = None) -> int:
    """Drop the least recently used files until the caches hold at most max_bytes (0: no cap); returns the bytes
    dropped. Never raises: a cache that cannot be read or trimmed is logged and left."""
    if max_bytes <= 0 or not os.path.isdir(cache_dir):
        return 0
    now = time.time() if now is None else now
    files, total = [], 0
    for root, dirs, names in os.walk(cache_dir):
        if root == cache_dir:
            dirs[:] = [d for d in dirs if d not in OWN_CAP]
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            total += st.st_size
            if now - st.st_mtime >= TRIM_MIN_AGE_S:
                files.append((max(st.st_atime, st.st_mtime), st.st_size, path))
    dropped = sum(size for _, size, _ in drop_least_recent(files, total, max_bytes))
    if dropped:
        log.info("compiler caches over %d MiB: dropped %d MiB of the least recently used files",
                 max_bytes >> 20, dropped >> 20)
    return dropped


def drop_least_recent(files: list[tuple[float, int, str]], total: int, max_bytes: int) -> list[tuple[float, int, str]]:
    """Unlink files ((last use, size, path)) least recently used first until total <= max_bytes; returns those
    dropped (one another worker's trim took meanwhile counts: its bytes are gone all the same). Stops, with a
    warning, at a file that cannot be removed."""
    dropped = []
    for entry in sorted(files):
        if total <= max_bytes:
            break
        try:
            os.unlink(entry[2])
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cache over %d MiB but %s cannot be dropped: %s", max_bytes >> 20, entry[2], e)
            break
        total -= entry[1]
        dropped.append(entry)
    return dropped
