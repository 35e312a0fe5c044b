"""The sandbox's RAM account: the AccessKey pairs it accepts and the identity of the one cluster it emulates.

Generated at first start and kept in the state database, so that a restart keeps the same keys and cluster id
(clients configured from ``sandbox.json`` keep working).
"""

from __future__ import annotations

import secrets
import string

from pydantic import BaseModel, SecretStr

from .store import Store

_ALNUM = string.ascii_letters + string.digits


class AccessKey(BaseModel):
    access_key_id: str
    access_key_secret: SecretStr


class Identity(BaseModel):
    region: str
    zones: list[str]
    cluster_id: str
    account_id: str
    access_key: AccessKey


def _new_access_key() -> AccessKey:
    # Real ids look like LTAI + 20 alphanumerics; secrets are 30 alphanumerics.
    return AccessKey(
        access_key_id="LTAI" + "".join(secrets.choice(_ALNUM) for _ in range(20)),
        access_key_secret=SecretStr("".join(secrets.choice(_ALNUM) for _ in range(30))),
    )


class Accounts:
    """Lookup of AccessKey secrets by id, as the cloud's authentication front end does."""

    def __init__(self, store: Store, region: str = "cn-hangzhou") -> None:
        self._store = store
        store.ensure("CREATE TABLE IF NOT EXISTS access_keys (id TEXT PRIMARY KEY, secret TEXT NOT NULL)")
        ident = store.get_meta("identity")
        if ident is None:
            key = _new_access_key()
            ident = {
                "region": region,
                "zones": [f"{region}-h", f"{region}-i", f"{region}-j"],
                "cluster_id": "c" + secrets.token_hex(16),
                "account_id": str(1000000000000000 + secrets.randbelow(10**15)),
                "access_key_id": key.access_key_id,
            }
            store.set_meta("identity", ident)
            self.add(key)
        secret = self.secret_for(ident["access_key_id"])
        self.identity = Identity(
            region=ident["region"],
            zones=ident["zones"],
            cluster_id=ident["cluster_id"],
            account_id=ident["account_id"],
            access_key=AccessKey(access_key_id=ident["access_key_id"], access_key_secret=SecretStr(secret or "")),
        )

    def add(self, key: AccessKey) -> None:
        self._store.execute(
            "INSERT OR REPLACE INTO access_keys(id, secret) VALUES(?, ?)",
            (key.access_key_id, key.access_key_secret.get_secret_value()),
        )

    def secret_for(self, access_key_id: str) -> str | None:
        """The secret of an AccessKey id, or None when the id is unknown (-> InvalidAccessKeyId)."""
        row = self._store.one("SELECT secret FROM access_keys WHERE id = ?", (access_key_id,))
        return None if row is None else row["secret"]
