"""The agent console: a static single-page app the API service serves under ``/console/``.

It is plain ES modules (no build step) that talk to the agent API and its WebSocket; nothing
here reads data. See ``routes.py`` for how the files are served and their security headers.
"""

from router.console.routes import CSP, SECURITY_HEADERS, routes

__all__ = ["CSP", "SECURITY_HEADERS", "routes"]
