"""Bearer tokens: the sandbox admin token (permanent, in the state DB) and temporary tokens issued for ACK's
DescribeClusterUserKubeconfig, which expire by the sandbox clock (simulated time)."""

from __future__ import annotations

import hmac
import secrets

from ..store import Store


class Tokens:
    def __init__(self, store: Store, clock) -> None:
        self.store = store
        self.clock = clock
        store.ensure("CREATE TABLE IF NOT EXISTS kube_tokens (token TEXT PRIMARY KEY, user TEXT NOT NULL,"
                     " expires REAL)")
        admin = store.get_meta("kube_admin_token")
        if admin is None:
            admin = secrets.token_urlsafe(32)
            store.set_meta("kube_admin_token", admin)
        self.admin = admin
        self._cache: dict[str, float | None] = {}

    def issue(self, user: str, ttl_seconds: float | None) -> tuple[str, float | None]:
        token = secrets.token_urlsafe(32)
        expires = None if ttl_seconds is None else self.clock.now() + ttl_seconds
        self.store.execute("INSERT INTO kube_tokens(token, user, expires) VALUES (?,?,?)", (token, user, expires))
        return token, expires

    def check(self, token: str) -> bool:
        # bytes: a header of any characters (latin-1 decoded) is a wrong token, never a TypeError
        if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self.admin.encode()):
            return True
        if token in self._cache:
            expires = self._cache[token]
        else:
            row = self.store.one("SELECT expires FROM kube_tokens WHERE token = ?", (token,))
            if row is None:
                return False
            expires = self._cache[token] = row["expires"]
        return expires is None or self.clock.now() < expires
