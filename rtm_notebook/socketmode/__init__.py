"""Socket Mode: the second transport under the session core (apps.connections.open, envelopes, acks)."""
