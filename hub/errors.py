"""Errors the CLI turns into one clear line (never a traceback)."""


class HubError(Exception):
    """A problem the operator can fix; the message says how."""


class PortInUse(HubError):
    pass


class MissingBinary(HubError):
    pass


class StartupFailed(HubError):
    pass
