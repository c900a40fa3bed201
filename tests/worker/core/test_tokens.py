"""Named API tokens: the file (0600, hashes only), names, add/list/revoke through ``fetalhc token``, lookups."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from worker.cli import main
from worker.core.tokens import TokenBook, TokenFileError, add_token, check_name, parse_tokens, read_tokens, revoke_token


def test_add_writes_only_the_hash_to_a_private_file_and_list_and_revoke(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "tokens"
    alice = add_token(path, "alice")
    bob = add_token(path, "b.smith@ward3")
    assert len(alice) >= 40 and alice != bob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert alice not in text and hashlib.sha256(alice.encode()).hexdigest() in text
    assert [e.name for e in read_tokens(path)] == ["alice", "b.smith@ward3"]
    with pytest.raises(TokenFileError, match="already has a token"):
        add_token(path, "alice")
    assert revoke_token(path, "alice") and not revoke_token(path, "alice")
    assert [e.name for e in read_tokens(path)] == ["b.smith@ward3"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", "a b", "tab\there", "new\nline", "nul\x00", "zero\u200bwidth", "x" * 65,
                                  "bell\x07"])
def test_names_without_whitespace_or_control_characters(name: str, tmp_path: Path) -> None:
    with pytest.raises(TokenFileError):
        check_name(name)
    with pytest.raises(TokenFileError):
        add_token(tmp_path / "tokens", name)
    assert not (tmp_path / "tokens").exists()


def test_malformed_files_say_which_line() -> None:
    good = "a" * 64
    assert [e.name for e in parse_tokens(f"# comment\n\nalice {good}\n")] == ["alice"]
    for text, words in ((f"alice {good} extra\n", "line 1"), ("alice 1234\n", "64 hex"),
                        (f"alice {good}\nalice {good}\n", "twice"), (f"a\x01b {good}\n", "control")):
        with pytest.raises(TokenFileError, match=words):
            parse_tokens(text)


def test_the_book_names_a_token_and_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    book = TokenBook(path)
    assert book.configured and book.name_of("anything") is None  # no file yet: nobody
    token = add_token(path, "alice")
    assert book.name_of(token) == "alice" and book.name_of(token + "x") is None and book.name_of("") is None
    revoke_token(path, "alice")
    assert book.name_of(token) is None
    assert not TokenBook(None).configured and TokenBook(None).name_of(token) is None


def test_cli_token_add_list_revoke(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens"
    assert main(["token", "list"]) == 2  # no file named anywhere
    assert "FETALHC_API_TOKENS_FILE" in capsys.readouterr().err
    fetalhc_env.setenv("FETALHC_API_TOKENS_FILE", str(path))
    from worker.core.settings import get_settings

    get_settings.cache_clear()
    assert main(["token", "add", "alice"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert TokenBook(path).name_of(token) == "alice" and token not in out.err
    assert main(["token", "add", "bad name"]) == 2
    assert "whitespace" in capsys.readouterr().err
    assert main(["token", "add", "bob", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "bob"
    assert main(["token", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["names"] == ["alice", "bob"]
    assert main(["token", "revoke", "alice"]) == 0
    assert main(["token", "revoke", "alice"]) == 1
    assert main(["token", "list"]) == 0
    assert capsys.readouterr().out.split() == ["bob"]


def test_cli_refuses_a_duplicate_name_and_an_unknown_revoke_clearly(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens"
    assert main(["token", "revoke", "nobody", "--file", str(path)]) == 1  # no file yet
    assert "'nobody' has no token" in capsys.readouterr().err and not path.exists()
    assert main(["token", "add", "alice", "--file", str(path)]) == 0
    first = capsys.readouterr().out.strip()
    before = path.read_bytes()

    assert main(["token", "add", "alice", "--file", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no second token printed
    assert "'alice' already has a token" in out.err and "fetalhc token revoke alice" in out.err
    assert path.read_bytes() == before and TokenBook(path).name_of(first) == "alice"  # the first still works

    assert main(["token", "revoke", "alicia", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert "'alicia' has no token" in err and "names there: alice" in err and "nothing was changed" in err
    assert path.read_bytes() == before
