"""The fuzzers' shared pieces: example counts that follow the hypothesis profile, a log trap, and the count
of inputs tried, printed at the end of the session.

Every fuzzer runs in the default run with a small sample (the ``carepulse`` profile) and with the big one
under ``make fuzz`` (``--hypothesis-profile=fuzz``); none is deselected by default. The input count is read
from hypothesis' own statistics of every test in the session (``tests/gateway/test_codecs_fuzz.py``
included), so ``make fuzz`` ends with the number of inputs actually run.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import pytest
from hypothesis import settings

#: The test's own HTTP client logs every URL it requests; the services' logs are what is checked.
CLIENT_LOGGERS = {"httpx", "httpcore"}
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
#: hypothesis' pytest plugin keeps each test's statistics on its report under this attribute.
_STATS_KEY = "_hypothesis_stats"


def examples(share: float = 1.0, *, at_least: int = 20) -> settings:
    """Settings running `share` of the profile's examples: a test whose examples are costly (an HTTP
    round trip, a worker evaluation) runs fewer than the cheap decoders, in every profile."""
    return settings(max_examples=max(at_least, int(settings.default.max_examples * share)))


class LogTrap(logging.Handler):
    """Collects every formatted record of the root logger while installed (caplog is per test; hypothesis
    examples share one test)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in CLIENT_LOGGERS:
            return
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")

    def __enter__(self) -> LogTrap:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._level)

    def assert_free_of(self, *secrets: str) -> None:
        for line in self.lines:
            for secret in secrets:
                assert secret not in line, f"a log line carries {secret[:6]}...: {line[:300]}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    per_file: Counter[str] = Counter()
    for reports in terminalreporter.stats.values():
        for report in reports:
            stats = getattr(report, _STATS_KEY, None) or report.__dict__.get(_STATS_KEY)
            if not stats:
                continue
            run = sum(int(passing) + int(failing) for passing, failing, _ in _CASES.findall(stats))
            per_file[report.nodeid.split("::")[0]] += run
    if not per_file:
        return
    terminalreporter.section("fuzz inputs")
    for path, count in sorted(per_file.items()):
        terminalreporter.write_line(f"{count:>10,}  {path}")
    terminalreporter.write_line(f"{sum(per_file.values()):>10,}  inputs tried in total "
                                f""
                                f"(hypothesis profile {getattr(settings, '_current_profile', '?')})")
