"""Device drivers: one lifecycle in the base class, one decoder per driver."""

from needlelab.devices.base import Device, DeviceError, DeviceState, DeviceStats
from needlelab.devices.registry import create_device, device_class

__all__ = ["Device", "DeviceError", "DeviceState", "DeviceStats", "create_device", "device_class"]
