"""API keys, hashed at rest.

A key reads ``mf_<id>_<secret>``: the id finds the record, the secret is checked against a salted
SHA-256 digest with a constant-time comparison. The key file holds one JSON record per line (id,
name, salt, digest) and never the secret, so a leaked file grants nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from medfool.errors import ConfigError

__all__ = ["KeyRecord", "KeyStore", "new_key"]


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    salt: str
    digest: str


def new_key(name: str) -> tuple[str, KeyRecord]:
    """A fresh key (shown once) and the record that verifies it."""
    kid, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(24), secrets.token_hex(8)
    return f"mf_{kid}_{secret}", KeyRecord(kid, name, salt, _digest(salt, secret))


class KeyStore:
    """The accepted keys: from a key file, or one key given on the command line."""

    def __init__(self, records: list[KeyRecord]) -> None:
        self.records = {r.id: r for r in records}

    @classmethod
    def single(cls, key: str, name: str = "default") -> KeyStore:
        """One key given as text (``--api-key``): hashed in memory like the file's."""
        if len(key) < 16:
            raise ConfigError("--api-key: use at least 16 characters (medfool range keys add makes one)")
        salt = secrets.token_hex(8)
        return cls([KeyRecord("", name, salt, _digest(salt, key))])

    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no key file here (medfool range keys add NAME --keys {p} makes one)")
        records = []
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                records.append(KeyRecord(str(d["id"]), str(d["name"]), str(d["salt"]), str(d["digest"])))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{p}, line {n}: not a key record (id, name, salt, digest)") from None
        if not records:
            raise ConfigError(f"{p}: holds no keys")
        return cls(records)

    @staticmethod
    def append(path: str | Path, record: KeyRecord) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record.__dict__) + "\n")

    def check(self, key: str) -> str | None:
        """The key's name when it is valid, else None."""
        if "" in self.records:  # a single key given as text
            r = self.records[""]
            return r.name if hmac.compare_digest(_digest(r.salt, key), r.digest) else None
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != "mf" or parts[1] not in self.records:
            return None
        r = self.records[parts[1]]
        return r.name if hmac.compare_digest(_digest(r.salt, parts[2]), r.digest) else None
