"""Simulated devices that speak the real wire protocols. Never imported by the runtime path."""
