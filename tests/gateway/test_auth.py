import pytest

from kpt.errors import Unauthenticated
from kpt_gateway.auth import OPEN_TENANT, Tokens


def test_tokens():
    t = Tokens({"tok-a": "alice", "tok-b": "bob"})
    assert t.tenant("Bearer tok-a") == "alice"
    assert t.tenant("bearer tok-b") == "bob"
    for bad in (None, "", "Bearer", "Basic tok-a", "Bearer tok-c"):
        with pytest.raises(Unauthenticated):
            t.tenant(bad)


def test_open_access_only_when_asked():
    assert Tokens({}, open_access=True).tenant(None) == OPEN_TENANT
    with pytest.raises(Unauthenticated):
        Tokens({}, open_access=False).tenant(None)


def test_bad_tenant_names_refused():
    with pytest.raises(ValueError):
        Tokens({"t": "a.b"})


def test_from_settings(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text("# comment\ntok-a alice\n\ntok-b bob  # trailing\n")
    monkeypatch.setenv("KPT_TOKENS_FILE", str(f))
    monkeypatch.setenv("KPT_TOKENS", "tok-c:carol")
    t = Tokens.from_settings()
    assert [t.tenant(f"Bearer tok-{x}") for x in "abc"] == ["alice", "bob", "carol"]
    monkeypatch.delenv("KPT_TOKENS_FILE")
    monkeypatch.delenv("KPT_TOKENS")
    with pytest.raises(ValueError, match="no tokens"):
        Tokens.from_settings()


@pytest.mark.parametrize("tokens", ["tok-a:alice, :bob", "tok-a:alice,  :bob"])
def test_empty_token_refused_at_start(monkeypatch, tokens):
    """KPT_TOKENS with an empty token (a stray ':bob') must not let 'Bearer ' plus blanks in as bob."""
    monkeypatch.setenv("KPT_TOKENS", tokens)
    with pytest.raises(ValueError, match="empty token"):
        Tokens.from_settings()
    with pytest.raises(ValueError, match="empty token"):
        Tokens({"  ": "bob"})
