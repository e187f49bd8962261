"""omnihub's hub: settings, the `omnihub` CLI, wiring and the embedded stack supervisor."""

__version__ = "0.1.0"
