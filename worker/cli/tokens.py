"""Named API tokens: ``token add NAME`` (prints the new token once), ``token list``, ``token revoke NAME``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.output import _print_json
from worker.core.settings import get_settings


def _tokens_file(args: argparse.Namespace) -> Path:
    path = args.file or get_settings().api_tokens_file
    if path is None:
        raise ValueError("no token file: set FETALHC_API_TOKENS_FILE (the file the API reads) or pass --file")
    return Path(path)


def cmd_token(args: argparse.Namespace) -> int:
    """``token add NAME`` / ``token list`` / ``token revoke NAME`` on ``FETALHC_API_TOKENS_FILE`` (or ``--file``)."""
    from worker.core.tokens import add_token, read_tokens, revoke_token

    path = _tokens_file(args)
    if args.action in ("add", "revoke") and not args.name:
        raise ValueError(f"token {args.action} needs a NAME")
    if args.action == "add":
        token = add_token(path, args.name)
        if args.json:
            _print_json({"name": args.name, "token": token, "file": str(path)})
        else:
            print(token)
            print(f"token for {args.name} added to {path}; it is shown only this once: give it to {args.name} "
                  "(Authorization: Bearer <token>, or the page's token field)", file=sys.stderr)
        return 0
    if args.action == "revoke":
        if not revoke_token(path, args.name):
            names = [entry.name for entry in read_tokens(path)]
            there = f"names there: {', '.join(names)}" if names else "it holds no names"
            print(f"fetalhc token revoke: error: {args.name!r} has no token in {path} ({there}; fetalhc token list); "
                  "nothing was changed", file=sys.stderr)
            return 1
        print(f"token of {args.name} revoked (the API refuses it from its next request)", file=sys.stderr)
        return 0
    names = [entry.name for entry in read_tokens(path)]
    if args.json:
        _print_json({"file": str(path), "names": names})
    else:
        for name in names:
            print(name)
        print(f"{len(names)} named token(s) in {path}", file=sys.stderr)
    return 0
