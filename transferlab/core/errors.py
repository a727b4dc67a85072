"""The errors a user can cause. Stages turn them into one clear line and exit status 1."""


class TransferlabError(Exception):
    """Base of every expected, user-facing error."""


class ParamsError(TransferlabError, ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


class DataError(TransferlabError, ValueError):
    """Input data is missing, empty, inconsistent or corrupt; the message names the path."""


class TrackingError(TransferlabError, RuntimeError):
    """The tracking store cannot be reached or used."""
