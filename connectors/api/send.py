"""Outbound on the ``api`` channel: replies are published on ``omnihub.outbound.api.v1`` for
the pushing system to consume; there is no peer to deliver to, so nothing is sent from here."""

from __future__ import annotations

from pipeline import topics

OUTBOUND_TOPIC = topics.outbound("api")
