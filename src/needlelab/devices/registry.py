"""The device registry: config `kind` → driver class, imported lazily.

Lazy imports keep optional dependencies (bleak for BLE sensors) out of sessions that do not use
them, and turn a missing one into a one-line error naming the extra to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from needlelab.config import DeviceBase
    from needlelab.devices.base import Device
    from needlelab.hub import Hub

DEVICE_CLASSES: dict[str, tuple[str, str, str | None]] = {
    # kind: (module, class, extra that provides its dependencies)
    "stim_serial": ("needlelab.devices.stim_serial", "StimulatorDriver", None),
    "stim_manual": ("needlelab.devices.stim_manual", "ManualStimulator", None),
    "emg_ble": ("needlelab.devices.ble_sensor", "EmgBleSensor", None),
    "caliper_ble": ("needlelab.devices.ble_sensor", "CaliperBleSensor", None),
    "lsl_inlet": ("needlelab.devices.lsl_inlet", "LslInlet", "lsl"),
}


class MissingDependencyError(ImportError):
    """An optional dependency of a device kind is not installed."""


def device_class(kind: str) -> type[Device]:
    """The driver class for a config `kind`."""
    try:
        module_name, class_name, extra = DEVICE_CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown device kind {kind!r}; known: {sorted(DEVICE_CLASSES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'needlelab[{extra}]'" if extra else "reinstall needlelab"
        raise MissingDependencyError(
            f"device kind {kind!r} needs {exc.name or 'a missing module'}: {hint}"
        ) from exc
    cls: type[Device] = getattr(module, class_name)
    return cls


def create_device(config: DeviceBase, hub: Hub) -> Device:
    """Instantiate the driver for a device config."""
    kind: str = getattr(config, "kind")  # noqa: B009 - every concrete device config has a kind
    return device_class(kind)(config, hub)
