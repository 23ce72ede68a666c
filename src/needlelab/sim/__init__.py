"""Simulated devices that speak the real wire protocols. Imported only when a config asks for one.

Stimulator: `needlelab.sim.stim_server.start_simulated_stim(profile, sim_config, workdir)` serves a
profile's protocol on a pseudo-terminal or loopback TCP (`.url` is what a driver opens);
`needlelab.sim.faults` has the fault schedule and the bad-byte generators; `needlelab sim stim`
(`needlelab.sim.cli`) serves the same from the command line.

BLE sensors: `emg_sensor` and `caliper` are bumble GATT peripherals (`ble_peripheral`); the EMG
carries artefacts of a simulated stimulator's pulses (`artefacts`, the sync check's ground truth).
`serve.SimulatorSet` starts every simulator of a session config (in-process, or behind bumble
controllers on unix sockets for `needlelab sim session`); `serve.SimulatorProcess` runs that in a
child process, as `needlelab demo` does.
"""
