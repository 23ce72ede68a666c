"""Testing kit for people who write device profiles: simulators as pytest fixtures.

Installed with needlelab and registered as a pytest plugin (entry point `pytest11`), so in any
project with needlelab installed::

    from needlelab.testing.plugin import wait_until

    def test_my_profile(sim_stim, stim_driver):
        sim = sim_stim("drivers/my-stim.toml", channels=[1])
        driver, hub = stim_driver(sim)  # a real StimulatorDriver, on the simulator's port
        wait_until(lambda: driver.stats.samples > 10)
        ...

drivers/README.md has the whole ten-line example.
"""
