"""GUI tests run on Qt's offscreen platform (set before Qt is imported)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def panel(qtbot: Any) -> Iterator[tuple[Any, Any]]:
    """A shown 900 x 700 trace panel of 10 s on its own hub: (TracePanel, Hub)."""
    from needlelab.clock import SessionClock  # Qt is imported only after the platform is set
    from needlelab.hub import Hub
    from needlelab.monitor.plots import TracePanel

    hub = Hub(SessionClock(), ring_seconds=30.0)
    traces = TracePanel(hub, window_s=10.0)
    qtbot.addWidget(traces)
    traces.resize(900, 700)
    traces.show()
    qtbot.waitExposed(traces)
    yield traces, hub
    hub.close()
