"""Errors that mean "the user asked for something wrong" (shown as one line, exit code 2)."""


class UserError(Exception):
    """A mistake in the user's input: the message names the problem and what to do about it."""
