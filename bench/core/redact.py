"""Redaction: a run folder made safe to share, with who and where replaced and no figure changed.

A run records the host name (also in the default folder's name), absolute paths under the user's
home (the Python executable, the data, the command line), the names of other busy processes, the
working folder's git identity (pytest-benchmark's commit_info) and, on GPU machines, GPU and MIG
UUIDs. `--redact` (and `bench redact DIR`) replaces each with `<kind>-<hash>`: an HMAC-SHA256 of
the text under a salt, so one machine's runs keep one name (a fleet still groups them) and nobody
without the salt can test a guess. The salt is $BENCH_REDACT_SALT, else the file
~/.config/torch-bench/redact-salt (made on first use, 0600); keep it to keep the names stable.

Only text is rewritten: numbers, and the fields that name a case (its key, the options, the state),
are never touched, so every figure of a redacted run equals the original's.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import platform
import re
import secrets
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.core.envvars import env_text
from bench.core.errors import UsageError

SALT_ENV = "BENCH_REDACT_SALT"
UUID = re.compile(r"\b(?:(?:GPU|MIG)-)?[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b")
HOME_PATH = re.compile(r"/(?:home|Users)/([^/\s'\"`:;,)]+)")
KEPT = {"key", "options", "state", "stopped_by", "schema_version", "status", "workload", "device", "mode"}
WORD = r"(?<![\w.-]){}(?![\w-])"  # a name, not part of a longer one


def salt_file() -> Path:
    return Path.home() / ".config" / "torch-bench" / "redact-salt"


def redaction_salt() -> bytes:
    """$BENCH_REDACT_SALT, else the salt file (created with a random salt the first time)."""
    text = env_text(SALT_ENV)
    if text:
        return text.encode()
    path = salt_file()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as error:
        raise UsageError(
            f"cannot read the redaction salt {path}: {error.strerror}", hint=f"set {SALT_ENV}"
        ) from None
    salt = secrets.token_hex(32).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as file:
            file.write(salt + b"\n")
    except FileExistsError:  # another run made it meanwhile
        return path.read_bytes().strip()
    except OSError as error:
        raise UsageError(
            f"cannot keep a redaction salt in {path}: {error.strerror}",
            hint=f"set {SALT_ENV} to a secret of your own",
        ) from None
    return salt


class Redactor:
    """Replaces the given hosts, users and homes (and any GPU/MIG UUID) wherever they are in text;
    the names of busy processes where they are recorded (a process called `bench` or `python` is
    not to be hashed inside every command line)."""

    def __init__(self, salt: bytes, names: Mapping[str, Iterable[str]]) -> None:
        self._salt = salt
        found = [(text, kind) for kind, texts in names.items() for text in texts if text and len(text) > 1]
        found.sort(key=lambda pair: -len(pair[0]))  # a home path before the user name inside it
        self._patterns = [
            (re.compile(re.escape(text) if kind == "home" else WORD.format(re.escape(text))), kind, text)
            for text, kind in dict(found).items()
        ]

    def token(self, kind: str, text: str) -> str:
        return f"{kind}-{hmac.new(self._salt, text.encode(), hashlib.sha256).hexdigest()[:10]}"

    def text(self, value: str) -> str:
        for pattern, kind, original in self._patterns:
            value = pattern.sub(self.token(kind, original), value)
        return UUID.sub(lambda match: self.token("gpu", match.group().lower()), value)

    def tree(self, value: Any, name: str = "") -> Any:
        """Every string of a JSON tree redacted, except under the keys that name a case (KEPT)."""
        if name in KEPT:
            return value
        if isinstance(value, str):
            return self.text(value)
        if name == "busy_processes" and isinstance(value, list):  # other users' processes, by name
            return [
                {**item, "name": self.token("process", str(item.get("name")))}
                if isinstance(item, dict)
                else item
                for item in value
            ]
        if isinstance(value, dict):
            return {key: self.tree(item, key) for key, item in value.items()}
        if isinstance(value, list):
            return [self.tree(item, name) for item in value]
        return value


def names_to_redact(env: dict[str, Any]) -> dict[str, set[str]]:
    """The hosts, users and homes of this machine and of the run's own facts."""
    hosts = {platform.node(), socket.gethostname(), str(env.get("host") or "")}
    hosts |= {host.split(".")[0] for host in hosts}
    users, homes = set(), {str(Path.home())}
    try:
        users.add(getpass.getuser())
    except (KeyError, OSError):  # no name for this uid (a container's --user)
        pass
    for text in _strings(env):
        for match in HOME_PATH.finditer(text):
            homes.add(match.group())
            users.add(match.group(1))
    homes.discard("/")
    return {"home": homes, "host": {h for h in hosts if h}, "user": users}


def redactor_for(env: dict[str, Any]) -> Redactor:
    return Redactor(redaction_salt(), names_to_redact(env))


def redact_benchmark_json(data: Any, redactor: Redactor) -> Any:
    """pytest-benchmark's JSON: its node name, the working folder's git identity, every path in it."""
    if isinstance(data, dict) and isinstance(data.get("commit_info"), dict):
        data = dict(data)
        data["commit_info"] = {
            key: redactor.token("git", str(value)) if isinstance(value, str) else value
            for key, value in data["commit_info"].items()
        }
    return redactor.tree(data)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def redacted_json_text(text: str, redactor: Redactor) -> str:
    return json.dumps(redact_benchmark_json(json.loads(text), redactor), indent=4) + "\n"


def redact_run(run: Any, redactor: Redactor) -> Any:
    """A copy of a Run with every string but a case's identity redacted (through the file format, so
    the copy is checked as any results file is)."""
    from bench.core.schema import validate

    return validate(redactor.tree(run.to_dict()), origin="the redacted run")


def redact_folder(run: Any, folder: Path, redactor: Redactor) -> Any:
    """results.json and pytest-benchmark.json of `folder` rewritten redacted; the redacted run.
    (The tables are the caller's to write again, from it.)"""
    from bench.core.store import PYTEST_BENCHMARK_FILE, save_run, write_atomic

    redacted = redact_run(run, redactor)
    save_run(redacted, folder)
    benchmark_json = folder / PYTEST_BENCHMARK_FILE
    if benchmark_json.is_file() and not benchmark_json.is_symlink():
        try:
            text = redacted_json_text(benchmark_json.read_text(encoding="utf-8"), redactor)
        except (OSError, ValueError) as error:
            raise UsageError(
                f"cannot redact {benchmark_json}: {error}", hint="remove it before sharing"
            ) from None
        write_atomic(benchmark_json, text)
    return redacted


def redacted_host() -> str:
    """This machine's name as a redacted run records it (for the default folder's name)."""
    return redactor_for({}).token("host", platform.node() or "host")
