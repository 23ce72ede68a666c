"""Clinical session logic: needling and localization (more to come: TPD, LRJ, scoring)."""
