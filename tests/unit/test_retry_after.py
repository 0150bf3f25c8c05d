"""Reading a server's `Retry-After` (RFC 9110: delay-seconds or an HTTP date)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from lowbuild.sources.fetch import retry_after


def test_delay_seconds() -> None:
    assert retry_after("120") == 120.0
    assert retry_after(" 0 ") == 0.0


def test_an_http_date_is_the_time_left_until_it() -> None:
    now = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 12, 4, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert retry_after(later, now=now) == 30.0
    # A date already past means "now", never a negative wait.
    assert retry_after("Fri, 04 Dec 2026 11:00:00 GMT", now=now) == 0.0


def test_absent_or_unreadable_is_none() -> None:
    for value in ("", "soon", "-5", "1.5", "Fri, 99 Foo 2026"):
        assert retry_after(value) is None, value
