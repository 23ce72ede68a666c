"""Simulated devices that speak the real wire protocols. Never imported by the runtime path.

Stimulator: `needlelab.sim.stim_server.start_simulated_stim(profile, sim_config, workdir)` serves a
profile's protocol on a pseudo-terminal or loopback TCP (`.url` is what a driver opens);
`needlelab.sim.faults` has the fault schedule and the bad-byte generators; `needlelab sim stim`
(`needlelab.sim.cli`) serves the same from the command line.
"""
