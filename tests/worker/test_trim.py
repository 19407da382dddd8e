"""kpt.worker.trim: the compiler caches kept under their cap, least recently used first."""

import os

from kpt.worker import trim

NOW = 1_000_000_000.0


def _file(root, rel: str, size: int, age_s: float) -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_the_least_recently_used_files_go_first_until_under_the_cap(tmp_path):
    root = str(tmp_path)
    oldest = _file(root, "inductor/fxgraph/a", 400, 9000)
    older = _file(root, "triton/abc/k.cubin", 300, 8000)
    newer = _file(root, "xla/c", 300, 7000)
    young = _file(root, "triton/def/k.cubin", 500, 60)  # written a minute ago: maybe by a running compile
    package = _file(root, "aoti/p.pt2", 5000, 99999)  # the package cache has its own cap
    dropped = trim.trim(root, max_bytes=900, now=NOW)
    assert dropped == 700
    assert not os.path.exists(oldest) and not os.path.exists(older)
    assert os.path.exists(newer) and os.path.exists(young) and os.path.exists(package)


def test_no_cap_or_no_folder_drops_nothing(tmp_path):
    kept = _file(str(tmp_path), "inductor/a", 100, 9000)
    assert trim.trim(str(tmp_path), max_bytes=0, now=NOW) == 0
    assert trim.trim(str(tmp_path / "missing"), max_bytes=1, now=NOW) == 0
    assert os.path.exists(kept)


def test_under_the_cap_nothing_goes(tmp_path):
    kept = _file(str(tmp_path), "inductor/a", 100, 9000)
    assert trim.trim(str(tmp_path), max_bytes=100, now=NOW) == 0 and os.path.exists(kept)
