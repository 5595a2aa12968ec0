"""The one base class of a user's mistake: a bad file, a bad option, a checkpoint that does not fit.

Every error of bitesm that a user can cause and fix (a malformed FASTA, an unknown config key, a checkpoint whose
``config.json`` contradicts its weights...) derives from :class:`UserInputError`. Its message names the input and
the fix. The ``bitesm`` command (:mod:`bitesm.cli`) prints that message alone and exits with code 2; any other
exception is a bug and keeps its traceback. Library users catch :class:`UserInputError` (or ``ValueError``, which it
derives from, so code that caught ``ValueError`` before keeps working).
"""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """A user's mistake; ``str(err)`` names the input (file, option, key) and how to fix it."""
