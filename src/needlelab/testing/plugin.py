"""needlelab pytest plugin (fixtures for profile authors)."""
