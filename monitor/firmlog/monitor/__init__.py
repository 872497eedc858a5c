"""firmlog.monitor: follows a log, witnesses, gossips to catch split views (DESIGN.md 5)."""
