"""Errors of tamis.seeds."""

from __future__ import annotations


class SeedsError(Exception):
    """Base class of tamis.seeds errors."""


class ReproductionError(SeedsError):
    """A record cannot be reproduced by this generator (fingerprint, settings or noise differ)."""


class ResultsFileError(SeedsError):
    """A results file is corrupted (the message names the file and line)."""


class JudgeError(SeedsError):
    """A judge cannot be built (bad path, bad configuration)."""
