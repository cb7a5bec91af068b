"""Errors raised for bad user input: the runner turns them into a one-line message and exit 1."""


class UserError(ValueError):
    """Bad input (a data file or a config value); the message says what and how to fix it."""
