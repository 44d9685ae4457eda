"""Simulated devices of every built-in protocol, for trying a hub and for the bench."""
