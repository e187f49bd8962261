"""Routing conversations to agents: pure policy, the service around it, the agent API."""
