"""firmlog.server: the log server (DESIGN.md section 4)."""
