"""The one exception type that the CLI prints as a single line (no traceback)."""


class UserError(Exception):
    """Bad input from the user (config, data, paths): the message names what and where."""
