"""The one error type for mistakes a user can cause and fix."""


class UsageError(ValueError):
    """A user mistake (bad file, bad value, bad option), raised where the value enters. The
    message is one plain sentence that names the file, line, column, key or label where they
    apply. It is a ``ValueError``, as Python and scikit-learn expect of a bad argument; the
    command line prints it and exits with status 2, and shows any other exception as the bug
    it is."""
