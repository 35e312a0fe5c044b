"""An HTTP client for the Prefect servers the tests start themselves.

A Prefect server answers 503 for errors a client may retry (``custom_internal_exception_handler`` in
``prefect/server/api/server.py``: a busy SQLite database on a loaded machine, say), and Prefect's own client retries
them. This is that client, ``PrefectHttpxSyncClient`` (429, 502, 503 and 408, with backoff), so that the tests'
direct API calls behave like Prefect's SDK rather than failing on the first busy moment."""

from __future__ import annotations

import httpx
from prefect.client.base import PrefectHttpxSyncClient


def prefect_http(api_url: str) -> httpx.Client:
    """A client for ``api_url`` (``.../api``) that retries what Prefect's client retries and raises nothing itself."""
    return PrefectHttpxSyncClient(base_url=api_url, timeout=30, raise_on_all_errors=False)
