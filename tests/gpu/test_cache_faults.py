"""The compiler caches under KPT_CACHE_DIR are an optimization: a cache that cannot be written (a file where its
folder should be, a full disk) or an entry another worker removes at the same moment skips the cache, it never
fails the job or the pass. Real files and real OS errors; nothing here needs a GPU."""

import json
import os
import resource
import subprocess
import sys

from kpt.gpu import cache
from tests.gpu.helpers import pythonpath


def unwritable(tmp_path) -> str:
    """A cache dir that cannot be created: its parent is a regular file (every write fails with ENOTDIR)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    return str(blocker / "cache")


def test_an_unwritable_cache_dir_is_skipped_by_configure(tmp_path, monkeypatch):
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    assert cache.configure(unwritable(tmp_path)) == {}
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ and "TRITON_CACHE_DIR" not in os.environ


def test_an_unwritable_cache_dir_neither_stores_nor_fails(tmp_path):
    pkg = tmp_path / "a.pt2"
    pkg.write_bytes(b"x" * 100)
    cache_dir = unwritable(tmp_path)
    cache.store(cache_dir, "k1", str(pkg))  # skipped, with a warning
    assert not cache.fetch(cache_dir, "k1", str(tmp_path / "out" / "b.pt2"))


def test_decisions_are_measured_without_a_writable_cache(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"base_ms": 1.0}

    cache_dir = unwritable(tmp_path)
    assert cache.decided(cache_dir, "k", measure) == ({"base_ms": 1.0}, False)
    assert cache.decided(cache_dir, "k", measure) == ({"base_ms": 1.0}, False)
    assert len(calls) == 2


_FULL_DISK = r"""
import os, resource, sys
from kpt.gpu import cache
cache_dir, src = sys.argv[1:3]
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
cache.store(cache_dir, "k1", src)  # the copy stops at 4 KiB (EFBIG): no room for the entry
cache.save_choice(cache_dir, "k2", {"order": "x" * 10000})  # so does the measured decision
print(sorted(os.listdir(os.path.join(cache_dir, "aoti")) + os.listdir(os.path.join(cache_dir, "choices"))))
print(cache.load_choice(cache_dir, "k2"))
"""


def test_a_full_disk_skips_the_store_and_leaves_no_partial_file(tmp_path):
    """The package and the decision writes fail with EFBIG (RLIMIT_FSIZE, as ENOSPC would): skipped, no .partial."""
    src = tmp_path / "model.aoti.pt2"
    src.write_bytes(os.urandom(64 << 10))
    cache_dir = tmp_path / "c"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    assert hard == resource.RLIM_INFINITY or hard > 4096
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(cache_dir), str(src)], capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": pythonpath(), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    listed, loaded = out.stdout.strip().splitlines()[-2:]
    assert json.loads(listed.replace("'", '"')) == [] and loaded == "None"


def test_trim_survives_an_entry_another_worker_removed(tmp_path, monkeypatch):
    folder = tmp_path / "aoti"
    folder.mkdir()
    for name in ("a.pt2", "b.pt2", "c.pt2"):
        (folder / name).write_bytes(b"x" * 100)
    listdir = os.listdir

    def listdir_then_other_worker_trims(path):
        names = listdir(path)
        os.unlink(os.path.join(path, "a.pt2"))  # the other worker's trim, between our listdir and stat
        return names

    monkeypatch.setattr(cache.os, "listdir", listdir_then_other_worker_trims)
    cache.trim(str(folder), max_bytes=100)
    monkeypatch.undo()
    assert len(os.listdir(folder)) == 1


def test_fetch_of_an_entry_removed_meanwhile_is_a_miss(tmp_path, monkeypatch):
    pkg = tmp_path / "a.pt2"
    pkg.write_bytes(b"x" * 100)
    cache.store(str(tmp_path / "c"), "k1", str(pkg))
    isfile = os.path.isfile

    def isfile_then_other_worker_trims(path):
        found = isfile(path)
        if found and path.endswith("k1.pt2"):
            os.unlink(path)  # the other worker's trim, between our check and the copy
        return found

    monkeypatch.setattr(cache.os.path, "isfile", isfile_then_other_worker_trims)
    assert not cache.fetch(str(tmp_path / "c"), "k1", str(tmp_path / "out" / "b.pt2"))
