"""The harness's exception tree.

Failed *requests* are data (status and error on the request record); failed *setup* is an
exception. Library errors are translated where they enter the harness, so callers only ever
catch these.
"""

from __future__ import annotations

from collections.abc import Sequence


class ServingBenchError(Exception):
    """Base of every error the harness raises on purpose."""


class ConfigError(ServingBenchError):
    """An input file is wrong. Names the file, the field and what was expected."""

    def __init__(
        self, source: str, problems: Sequence[tuple[str, str]], what: str = "invalid scenario"
    ) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {what} ({len(self.problems)} problem(s))"]
        lines += [f"  - {field}: {message}" for field, message in self.problems]
        super().__init__("\n".join(lines))


class UnavailableError(ServingBenchError):
    """A part (adapter, variant, launcher) cannot run on this machine; the message says why."""


class VariantBuildError(ServingBenchError):
    """A variant could not be built, or failed its validation gate."""


class LaunchError(ServingBenchError):
    """A server did not start or did not become ready. Carries the last lines of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.log_tail = log_tail
        text = message if not log_tail else f"{message}\n--- last log lines ---\n{log_tail}"
        super().__init__(text)


class ProtocolError(ServingBenchError):
    """A server answered something its protocol does not allow."""


class FidelityError(ServingBenchError):
    """A target's answers differ from the reference beyond tolerance."""


class RunFolderError(ServingBenchError, ValueError):
    """A folder is not a readable run folder (no run.json, or a file that is not JSON)."""
