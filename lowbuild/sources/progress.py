"""How `lowbuild fetch` shows progress: live bars on a terminal, one plain line per
artifact otherwise (CI logs stay readable). Both are FetchReporters, thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:
    from lowbuild.sources.fetch import FetchReporter


class LineReporter:
    """One line per finished download, nothing in between."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._lock = threading.Lock()

    def started(self, name: str, total: int | None) -> None:
        pass

    def advanced(self, name: str, nbytes: int) -> None:
        pass

    def finished(self, name: str, message: str) -> None:
        with self._lock:
            self._console.print(f"fetched {message}", highlight=False, markup=False)

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


class BarReporter:
    """A rich progress bar per download in flight; use as a context manager."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def started(self, name: str, total: int | None) -> None:
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = self._progress.add_task(name, total=total)

    def advanced(self, name: str, nbytes: int) -> None:
        task = self._tasks.get(name)
        if task is not None:
            self._progress.update(task, completed=nbytes)

    def finished(self, name: str, message: str) -> None:
        task = self._tasks.get(name)
        if task is not None:
            self._progress.update(task, description=f"[green]✓[/] {name}")

    def __enter__(self) -> BarReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()


class LoggingReporter:
    """Passes everything on to `shown` and writes each finished download to `log` too
    (a run log line writer), so a build's log says where its inputs came from."""

    def __init__(self, shown: FetchReporter, log: Callable[[str], None]) -> None:
        self._shown = shown
        self._log = log

    def started(self, name: str, total: int | None) -> None:
        self._shown.started(name, total)

    def advanced(self, name: str, nbytes: int) -> None:
        self._shown.advanced(name, nbytes)

    def finished(self, name: str, message: str) -> None:
        self._shown.finished(name, message)
        self._log(f"fetched {message}")


def reporter_for(console: Console) -> LineReporter | BarReporter:
    """Bars when `console` is a terminal, plain lines otherwise."""
    return BarReporter(console) if console.is_terminal else LineReporter(console)
