"""What firmlog's HTTP services, the log server and the monitor, share."""
