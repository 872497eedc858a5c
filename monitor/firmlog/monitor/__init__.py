"""firmlog.monitor: follows a log, witnesses checkpoints, gossips to catch split views (DESIGN.md section 5)."""
