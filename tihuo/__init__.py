"""tihuo wiring: settings, database, app factory and command line."""
