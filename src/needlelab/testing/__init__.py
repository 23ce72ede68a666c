"""Testing kit for needlelab profile authors."""
