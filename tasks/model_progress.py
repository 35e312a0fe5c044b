"""Progress of a model upload: a thread-safe byte counter, oss2's per-file callback, and its display.

Workers advance the counter; the calling thread renders it as a rich bar (optional) and, inside a Prefect run, as a
progress artifact keyed ``model-upload``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from clients.logs import in_prefect_run, run_logger

ARTIFACT_KEY = "model-upload"


class TransferAborted(Exception):
    """Raised inside a transfer's progress callback to stop it once another file has failed."""


class Progress:
    """Thread-safe byte counter; workers advance it, the calling thread renders it (bar, artifact)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self.abort = threading.Event()

    def advance(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.done += n

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)


class FileProgressCallback:
    """oss2 progress callback for one file: advances the shared counter and remembers the resumed offset.

    For a multipart upload oss2 reports the bytes of finished parts at the start of each part; its first report is
    what a resumed upload found already on OSS.
    """

    def __init__(self, progress: Progress, key: str, hook: Callable[[str, int, int], None] | None) -> None:
        self.progress = progress
        self.key = key
        self.hook = hook
        self.first: int | None = None
        self.seen = 0
        self._lock = threading.Lock()

    def __call__(self, consumed: int, total: int | None) -> None:
        if self.progress.abort.is_set():
            raise TransferAborted(self.key)
        with self._lock:
            if self.first is None:
                self.first = consumed
            delta = consumed - self.seen
            if delta > 0:
                self.seen = consumed
        self.progress.advance(delta)
        if self.hook is not None:
            self.hook(self.key, consumed, total or 0)

    def finish(self, size: int) -> None:
        with self._lock:
            delta = size - self.seen
            self.seen = max(self.seen, size)
        self.progress.advance(delta)


class ProgressRenderer:
    """Renders progress from the calling thread: a rich bar (optional) and a Prefect progress artifact.

    The artifact exists only inside a Prefect flow or task run (outside one there is no API to write to); it is
    updated when the percentage crosses another ``step`` percent. A failing artifact write is logged, not fatal.
    """

    def __init__(self, progress: Progress, description: str, show_progress: bool, step: float = 2.0) -> None:
        self.progress = progress
        self.step = step
        self._artifact_id: Any = None
        self._last_bucket = -1
        self._bar = None
        self._task_id = None
        if show_progress:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            self._task_id = self._bar.add_task(description, total=progress.total)
            self._bar.start()
        if in_prefect_run():
            try:
                from prefect.artifacts import create_progress_artifact

                self._artifact_id = create_progress_artifact(
                    progress=0.0, key=ARTIFACT_KEY, description=description, _sync=True
                )
            except Exception as exc:  # progress display must never fail the upload
                run_logger().warning("could not create the progress artifact: %s", exc)

    def render(self, final: bool = False) -> None:
        if self._bar is not None:
            self._bar.update(self._task_id, completed=self.progress.done)
        if self._artifact_id is not None:
            pct = self.progress.percent
            bucket = int(pct // self.step)
            if bucket != self._last_bucket or final:
                self._last_bucket = bucket
                try:
                    from prefect.artifacts import update_progress_artifact

                    update_progress_artifact(artifact_id=self._artifact_id, progress=round(pct, 1), _sync=True)
                except Exception as exc:
                    run_logger().warning("could not update the progress artifact: %s", exc)
                    self._artifact_id = None

    def close(self) -> None:
        self.render(final=True)
        if self._bar is not None:
            self._bar.stop()
