"""Exceptions that darch raises for user mistakes and unrecoverable search states.

Every message says what is wrong, what was received and how to fix it. The
``darch`` command turns a :class:`DarchError` into one line on stderr and exit
code 2, with no traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DarchError(Exception):
    """Base class of darch's user-facing errors."""


class SpaceError(DarchError, ValueError):
    """A search space or a hyperparameter domain is malformed."""


class ConfigError(DarchError, ValueError):
    """A config does not fit its search space, or a setting is invalid."""


class JournalError(DarchError):
    """A journal folder cannot be used: not a journal, locked, or mismatched."""


class JournalLockedError(JournalError):
    """Another live search holds the journal folder's lock."""


class TrialError(DarchError):
    """An evaluator returned something that is not a valid trial result."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``.

    Examples
    --------
    >>> did_you_mean("seach", ["search", "space"])
    " (did you mean 'search'?)"
    >>> did_you_mean("zzz", ["search"])
    ''
    """
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
