"""Every failure lowbuild reports is a LowbuildError carrying its own exit code.

Exit codes (also in README):
  0  success
  1  something failed: a build, a smoke test, a fetch of a declared input
  2  bad input: a malformed spec, a missing file, a bad command line
  3  environment: no usable engine, an engine refused to start
  4  verification: a digest mismatch, a tampered bundle
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_VERIFY = 4


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when one of `choices` is close to `word`, else ""."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class LowbuildError(Exception):
    """Base of every error lowbuild raises on purpose; str() is the user-facing message."""

    exit_code: int = EXIT_FAILED


@dataclass(frozen=True)
class Location:
    """A place in a file, for messages: `path:line`, or `path:line:column` (both from 1)."""

    path: Path
    line: int | None = None
    column: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.line is None:
            return str(self.path)
        return f"{self.path}:{self.line}" + (f":{self.column}" if self.column else "")


class SpecError(LowbuildError):
    """The user's spec (lowbuild.yaml, image.yaml, a Dockerfile) is wrong."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.location = location
        # The independent mistakes this error reports: itself, or those of `several`;
        # `stopped`: reading stopped before the end (too many), so there may be more.
        self.mistakes: tuple[SpecError, ...] = (self,)
        self.stopped = False
        super().__init__(f"{location}: {message}" if location else message)

    @classmethod
    def several(
        cls, errors: Sequence[SpecError], *, limit: int, stopped: bool = False
    ) -> SpecError:
        """One error reporting every mistake of `errors` (at least one; an error that
        already reports several counts as those): the only one as it is, else the first
        `limit` one per line, in the order given, then how many in all (`stopped`: the
        reading stopped early, so at least that many). Its location is the first
        mistake's, so a `--json` record still points at a file and line."""
        mistakes = [mistake for error in errors for mistake in error.mistakes]
        stopped = stopped or any(error.stopped for error in errors)
        if len(mistakes) == 1 and not stopped:
            return mistakes[0]
        shown = [str(mistake) for mistake in mistakes[:limit]]
        more = len(mistakes) - len(shown)
        files = len({m.location.path for m in mistakes if m.location is not None})
        combined = cls(
            "\n".join(shown)
            + (f"\n... and {more} more (fix these and run again)" if more else "")
            + ("\nat least " if stopped else "\n")
            + f"{len(mistakes)} mistakes in {files} file{'s' if files != 1 else ''}"
            + (" (too many: the reading stopped there)" if stopped else "")
        )
        combined.location = mistakes[0].location if mistakes else None
        combined.mistakes = tuple(mistakes)
        combined.stopped = stopped
        return combined


class UsageError(LowbuildError):
    """A command line that cannot be carried out as given."""

    exit_code = EXIT_BAD_INPUT


class EngineError(LowbuildError):
    """An engine command failed; carries what was run and what the engine said."""

    def __init__(self, command: Sequence[str], returncode: int, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip()[-4000:]
        super().__init__(
            f"engine command failed (exit {returncode}): {' '.join(self.command)}"
            + (f"\n{tail}" if tail else "")
        )


class EngineTimedOut(EngineError):
    """An engine command did not finish within its time limit and was killed.

    `output` is what the work had printed by then, when it could be read (a smoke
    command's container log), for the message of whoever set the limit.
    """

    def __init__(self, command: Sequence[str], *, seconds: float, output: str = "") -> None:
        self.seconds = seconds
        self.output = output
        super().__init__(command, -1, f"no answer within {seconds:g} s")


class EngineUnavailable(LowbuildError):
    """No engine (or not the asked-for engine) can work on this host."""

    exit_code = EXIT_ENVIRONMENT


class FetchError(LowbuildError):
    """A declared input could not be obtained from any of its sources."""


class CacheWriteError(LowbuildError):
    """Bytes could not be written into the cache (a full disk, a quota, a read-only
    cache): names the cache path, since no other source or mirror would help."""


class ProjectBusy(LowbuildError):
    """Another lowbuild run holds the project lock and `--no-wait` was given."""


class OfflineMissing(LowbuildError):
    """--offline was asked and inputs are not in the cache."""

    exit_code = EXIT_BAD_INPUT


class VerificationError(LowbuildError):
    """Bytes did not match their pinned digest (artifact, cache entry, bundle member)."""

    exit_code = EXIT_VERIFY


class SmokeTestFailed(LowbuildError):
    """An image was built but its declared smoke test did not pass."""


EXIT_INTERRUPTED = 130


class Interrupted(LowbuildError):
    """Ctrl-C or SIGTERM: running work was stopped and cleaned up."""

    exit_code = EXIT_INTERRUPTED


def error_kind(error: type[LowbuildError]) -> str:
    """The `kind` the JSON error object gives a failure: the class name without `Error`,
    its words joined by '-' (SpecError → "spec", OfflineMissing → "offline-missing")."""
    name = error.__name__.removesuffix("Error") or error.__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def error_kinds() -> tuple[str, ...]:
    """Every kind a JSON error object can have, sorted (every error lowbuild raises is
    LowbuildError or a subclass defined here)."""
    found: set[str] = set()
    pending: list[type[LowbuildError]] = [LowbuildError]
    while pending:
        error = pending.pop()
        found.add(error_kind(error))
        pending.extend(error.__subclasses__())
    return tuple(sorted(found))
