"""User-facing errors: one line, names the input and the fix; the CLI maps them to exit codes."""


class UserError(Exception):
    """A mistake in what the user gave us. exit_code 2 = usage, 1 = data/model problem."""

    exit_code = 1


class UsageError(UserError):
    exit_code = 2


class DataError(UserError):
    exit_code = 1


class ModelError(UserError):
    exit_code = 1


class ConfigError(UserError):
    exit_code = 2
