"""The left/right judgement task on screen: procedural hands, feet and backs, one at a time.

Every picture is drawn with QPainter paths (no image files): a right hand (palm, four fingers,
the thumb on the left as seen from the back of the hand), a right foot (sole, the big toe on the
inside), a back turned to the right (the torso and the right arm reaching out). A left picture is
the right one mirrored, and each is turned by its rotation. The reaction time runs from the
frame the picture appeared in: the task stamps the session clock right after it has painted a
new picture, and again when the answer key arrives. Keys: Left arrow or L, Right arrow or R;
Escape ends the block early.
"""

from __future__ import annotations

from collections.abc import Callable

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from needlelab.clinic.lrj import LrjStimulus, Side
from needlelab.clinic.run import ProtocolRun
from needlelab.clock import SessionClock

Qt = QtCore.Qt
SKIN = QtGui.QColor("#e0b48c")
OUTLINE = QtGui.QColor("#5d4037")


def _hand() -> QtGui.QPainterPath:
    """A right hand seen from the back, fingers up, in a 200 x 200 box centred on 0."""
    path = QtGui.QPainterPath()
    path.addRoundedRect(QtCore.QRectF(-45, -10, 90, 95), 25, 25)  # palm
    for k, (x, length) in enumerate(((-35, 70), (-12, 85), (11, 80), (33, 62))):
        width = 20 if k else 21
        path.addRoundedRect(QtCore.QRectF(x - width / 2, -10 - length, width, length + 20), 10, 10)
    thumb = QtGui.QPainterPath()
    thumb.addRoundedRect(QtCore.QRectF(-20, -11, 22, 66), 11, 11)
    turn = QtGui.QTransform().translate(-45, 40).rotate(-50)
    path.addPath(turn.map(thumb))
    return _solid(path)


def _foot() -> QtGui.QPainterPath:
    """A right foot seen from above, toes up, the big toe on the inside (left)."""
    path = QtGui.QPainterPath()
    path.addEllipse(QtCore.QRectF(-38, -66, 80, 156))  # sole
    for x, y, r in ((-24, -70, 17), (-2, -76, 11), (14, -72, 10), (27, -64, 9), (37, -52, 8)):
        path.addEllipse(QtCore.QPointF(x, y), r, r * 1.15)
    return _solid(path)


def _back() -> QtGui.QPainterPath:
    """A torso seen from behind, turned to its right, the right arm reaching out."""
    path = QtGui.QPainterPath()
    path.addEllipse(QtCore.QPointF(0, -80), 22, 25)  # head
    path.addRoundedRect(QtCore.QRectF(-45, -55, 90, 120), 30, 30)  # torso
    arm = QtGui.QPainterPath()
    arm.addRoundedRect(QtCore.QRectF(0, -9, 85, 18), 9, 9)
    path.addPath(QtGui.QTransform().translate(35, -45).rotate(-25).map(arm))
    left_arm = QtGui.QPainterPath()
    left_arm.addRoundedRect(QtCore.QRectF(-9, 0, 18, 80), 9, 9)
    path.addPath(QtGui.QTransform().translate(-42, -45).rotate(12).map(left_arm))
    return _solid(path)


SHAPES: dict[str, Callable[[], QtGui.QPainterPath]] = {"hand": _hand, "foot": _foot, "back": _back}


def _solid(path: QtGui.QPainterPath) -> QtGui.QPainterPath:
    """The union of overlapping parts: one outline, no holes where parts overlap."""
    path.setFillRule(Qt.FillRule.WindingFill)
    return path.simplified()


def stimulus_path(stimulus: LrjStimulus) -> QtGui.QPainterPath:
    """The picture's outline in a 200 x 200 box centred on 0: mirrored for left, then turned."""
    transform = QtGui.QTransform()
    transform.rotate(stimulus.rotation)
    if stimulus.side == "L":
        transform.scale(-1, 1)
    return transform.map(SHAPES[stimulus.body_part]())


class LrjTask(QtWidgets.QWidget):  # type: ignore[misc]
    """One LRJ block: fixation, picture, answer or timeout, gap; then `finished`."""

    finished = QtCore.Signal()

    def __init__(
        self,
        run: ProtocolRun,
        clock: SessionClock,
        stimuli: list[LrjStimulus],
        timeout_s: float,
        gap_s: float,
    ) -> None:
        super().__init__()
        self.run = run
        self.clock = clock
        self.stimuli = stimuli
        self.timeout_ms = round(timeout_s * 1000)
        self.gap_ms = round(gap_s * 1000)
        self.index = -1
        self.current: LrjStimulus | None = None
        self.shown_t_ns: int | None = None  # stamped after the picture's first paint
        self._needs_stamp = False
        self.setWindowTitle("Left or right?")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setStyleSheet("background: #fafafa")
        self._timeout = QtCore.QTimer(self)
        self._timeout.setSingleShot(True)
        self._timeout.timeout.connect(lambda: self._answer(None))
        self._next = QtCore.QTimer(self)
        self._next.setSingleShot(True)
        self._next.timeout.connect(self._show_next)

    def start(self) -> None:
        """Begin the block (show the widget first)."""
        self.setFocus()
        self._next.start(self.gap_ms)

    def _show_next(self) -> None:
        self.index += 1
        if self.index >= len(self.stimuli):
            self.current = None
            self.update()
            self.finished.emit()
            return
        self.current = self.stimuli[self.index]
        self.shown_t_ns = None
        self._needs_stamp = True
        self.repaint()  # paint now: the stamp follows the frame

    def paintEvent(self, _event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QtGui.QColor("#fafafa"))
        centre = QtCore.QPointF(self.width() / 2, self.height() / 2)
        painter.translate(centre)
        scale = min(self.width(), self.height()) / 260
        painter.scale(scale, scale)
        if self.current is None:  # fixation cross between pictures
            painter.setPen(QtGui.QPen(QtGui.QColor("#9e9e9e"), 3))
            painter.drawLine(QtCore.QPointF(-12, 0), QtCore.QPointF(12, 0))
            painter.drawLine(QtCore.QPointF(0, -12), QtCore.QPointF(0, 12))
        else:
            painter.setPen(QtGui.QPen(OUTLINE, 2.5))
            painter.setBrush(SKIN)
            painter.drawPath(stimulus_path(self.current))
        painter.end()
        if self.current is not None and self._needs_stamp:
            self._needs_stamp = False
            self.shown_t_ns = self.clock.now_ns()
            self._timeout.start(self.timeout_ms)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Left, Qt.Key.Key_L):
            self._answer("L")
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_R):
            self._answer("R")
        elif key == Qt.Key.Key_Escape:
            self._timeout.stop()
            self._next.stop()
            self.current = None
            self.finished.emit()
        else:
            super().keyPressEvent(event)

    def _answer(self, side: Side | None) -> None:
        if self.current is None or self.shown_t_ns is None:
            return  # no picture on screen yet: a key now is not an answer
        answered = self.clock.now_ns() if side is not None else None
        self._timeout.stop()
        stimulus, shown = self.current, self.shown_t_ns
        self.current, self.shown_t_ns = None, None
        self.repaint()
        self.run.lrj_trial(stimulus.name, stimulus.body_part, stimulus.side, side, shown, answered)
        self._next.start(self.gap_ms)
