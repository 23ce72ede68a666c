"""The demo's clinician and patient: the default protocol, end to end, on the session clock.

`demo_script` walks the session's protocol run (`[session] protocol`, the shipped `low-back-l3`
in the demo config) with a simulated patient (`sim.patient`): ratings, TPD staircases, LRJ blocks
and, during needling with e-stim, localization questions. The clinician's pace is quicker than a
clinic's (a TPD trial every 0.06 s, a question every 1.5 s, 6 LRJ pictures a block) so the whole
protocol runs in under a minute; the patient's reaction times are waited for, so every time in
the file is real.
"""

from __future__ import annotations

import threading

from needlelab.clinic.localization import EntryRefused
from needlelab.clinic.lrj import block_stimuli
from needlelab.clinic.protocol import load_protocol
from needlelab.clinic.run import ProtocolRun
from needlelab.session import Session
from needlelab.sim.patient import SimulatedPatient

TPD_TRIAL_S = 0.06
PROMPT_EVERY_S = 1.5
LRJ_TRIALS = 6
LRJ_GAP_S = 0.3
RATING_S = 0.4


def demo_script(session: Session, stop: threading.Event) -> None:
    """Run the session's protocol with a simulated patient until it ends, `stop` is set or the
    recording ends (its entries are refused then: nothing is entered that is not recorded)."""
    try:
        _walk_protocol(session, stop)
    except EntryRefused:
        return


def _walk_protocol(session: Session, stop: threading.Event) -> None:
    run = session.protocol_run
    if run is None:  # a config without a protocol: the default one
        protocol = load_protocol("low-back-l3", session.config.localization)
        run = session.protocol_run = ProtocolRun(session.hub, session.localization, protocol)
    protocol = run.protocol
    patient = SimulatedPatient(seed=1)
    log = session.localization
    log.note("patient prone; sites marked")
    while (phase := run.advance()) is not None:
        when = phase.when
        if phase.kind == "nrs":
            if stop.wait(RATING_S):
                return
            run.nrs(patient.nrs(when))
        elif phase.kind == "rom":
            for movement in phase.movements:
                if stop.wait(RATING_S):
                    return
                run.rom(movement, patient.rom(movement, when))
        elif phase.kind == "tpd":
            while (track := run.current_track()) is not None:
                if stop.wait(TPD_TRIAL_S):
                    return
                trial = track.staircase.next_trial()
                run.tpd_answer(track, patient.tpd(track.site, when, trial))
        elif phase.kind == "lrj":
            for k, stimulus in enumerate(block_stimuli(protocol.lrj, run.index, LRJ_TRIALS)):
                if stop.wait(LRJ_GAP_S if k else RATING_S):
                    return
                shown = session.clock.now_ns()
                answer, rt_s = patient.lrj(stimulus.side, when)
                if stop.wait(rt_s):
                    return
                run.lrj_trial(
                    stimulus.name, stimulus.body_part, stimulus.side, answer,
                    shown, session.clock.now_ns(),
                )  # fmt: skip
        elif phase.kind == "needling":
            log.note("needle in")
            for _ in range(protocol.prompts.count):
                if stop.wait(PROMPT_EVERY_S) or log.site is None:
                    return
                log.prompt()
                level, side, words, latency_s = patient.localize(log.site, log.levels)
                if stop.wait(latency_s):
                    return
                log.answer(level, side, words)
            log.note("needle out")
