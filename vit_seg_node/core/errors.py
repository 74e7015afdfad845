"""Errors that the command line turns into one clear line and exit code 2."""


class UserError(Exception):
    """A problem with what the user gave us (paths, files, arguments), not a bug."""
