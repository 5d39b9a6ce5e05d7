"""The error a user can cause and fix: the command line prints its message and exits with 2."""


class UsageError(Exception):
    """A user mistake (bad file, bad value, bad option). The message is one plain sentence that
    names the file, line, column and value where they apply."""
