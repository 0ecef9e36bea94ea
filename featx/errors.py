"""The one exception class for mistakes a user can fix."""


class FeatxError(Exception):
    """A user error: the CLI prints its message on one line and exits 1, without a traceback.

    The message names the file or setting at fault and says how to fix it.
    """
