"""The e2e suite's mesh: kpt.local.Mesh with two tenants."""

from kpt.local import Mesh

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}


def start(tmp: str, **kw) -> Mesh:
    return Mesh.start(tmp, TOKENS, **kw)
