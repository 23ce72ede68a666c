"""Bluetooth LE plumbing: a bleak backend on bumble (for simulation) and the BLE event loop."""
