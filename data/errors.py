"""The one error type for input that cannot be used: the CLI prints it as one line and exits 2.

Kept apart from data/schema.py (which needs pandas) so the CLI and `import linerisk` stay cheap.
"""


class InputError(ValueError):
    """Input that cannot be used at all (unreadable file, missing column, broken rule): stops the run."""
