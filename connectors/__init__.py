"""Channel connectors: each turns its channel's traffic into message.received events."""
