"""API keys in the job store: made, found, listed and revoked.

The secret (``"cfn_" + token_urlsafe(32)``) is returned once by :meth:`KeyStore.create_key`
and never stored; the row holds ``sha256(secret)`` (hex) and the secret's first 8 characters
(``prefix``, an index for lookup and something to show in listings). :meth:`KeyStore.find_key`
fetches the rows with that prefix and compares the hashes with :func:`hmac.compare_digest`.
A key's ``max_priority`` (0 unless given) is the highest priority its jobs may ask for.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from comfyfn.jobs.schema import (
    MAX_PRIORITY,
    PREFIX_LEN,
    KeyRecord,
    _hash,
    _key,
    _new_id,
    keys_t,
)

__all__ = ["KeyStore", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> tuple[int, float]:
    """``"60/min"`` → (60 requests, per 60 seconds)."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"rate {text!r} is not like 60/min, 10/s or 1000/hour")
    return int(match.group(1)), float(_PER[match.group(2)])


class KeyStore:
    """The API-key methods of :class:`comfyfn.jobs.store.Store` (which provides the
    transactions and the clock)."""

    clock: Callable[[], float]
    _read: Callable[[], AbstractContextManager[Connection]]
    _write: Callable[[], AbstractContextManager[Connection]]

    def create_key(
        self, name: str, rate: str = "60/min", *, max_priority: int = 0
    ) -> tuple[str, KeyRecord]:
        """A new key: (its secret, shown only now; its record). Names of live keys are unique;
        ``max_priority``, from 0 to :data:`MAX_PRIORITY`, caps its jobs' priority."""
        if not name or not name.strip():
            raise ValueError("a key needs a name")
        parse_rate(rate)  # ValueError with a readable message
        if type(max_priority) is not int or not 0 <= max_priority <= MAX_PRIORITY:
            raise ValueError(
                f"max priority {max_priority!r} is not a whole number 0-{MAX_PRIORITY}"
            )
        secret = "cfn_" + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=_new_id("key"),
            name=name,
            prefix=secret[:PREFIX_LEN],
            rate=rate,
            created_at=self.clock(),
            revoked=False,
            max_priority=max_priority,
        )
        taken = ValueError(f"an active key named {name!r} exists already (revoke it first)")
        try:
            with self._write() as conn:
                exists = conn.execute(
                    sa.select(keys_t.c.id).where(
                        keys_t.c.name == name, keys_t.c.revoked == sa.false()
                    )
                ).first()
                if exists:
                    raise taken
                conn.execute(
                    sa.insert(keys_t).values(
                        id=record.id,
                        name=record.name,
                        prefix=record.prefix,
                        hash=_hash(secret),
                        rate=record.rate,
                        created_at=record.created_at,
                        revoked=False,
                        max_priority=max_priority,
                    )
                )
        except IntegrityError as e:  # a concurrent create_key with the same name won
            raise taken from e
        return secret, record

    def find_key(self, secret: str) -> KeyRecord | None:
        """The live key whose secret this is, else None (hashes compared in constant time)."""
        if not isinstance(secret, str) or not secret:
            return None
        digest = _hash(secret)
        with self._read() as conn:
            rows = conn.execute(
                sa.select(keys_t).where(
                    keys_t.c.prefix == secret[:PREFIX_LEN], keys_t.c.revoked == sa.false()
                )
            ).all()
        found = None
        for row in rows:
            if hmac.compare_digest(row._mapping["hash"], digest):
                found = row
        if not rows:  # the same work whether or not the prefix exists
            hmac.compare_digest(digest, _hash("cfn_" + "0" * 43))
        return _key(found) if found is not None else None

    def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(keys_t).order_by(keys_t.c.created_at, keys_t.c.id))
            return [_key(r) for r in rows]

    def revoke_key(self, name_or_id: str) -> bool:
        """Revoke the live key with this id or name; False if there is none."""
        with self._write() as conn:
            result = conn.execute(
                sa.update(keys_t)
                .where(
                    sa.or_(keys_t.c.id == name_or_id, keys_t.c.name == name_or_id),
                    keys_t.c.revoked == sa.false(),
                )
                .values(revoked=True)
            )
            return result.rowcount > 0
