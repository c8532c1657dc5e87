"""The alert log: written by the monitor, read by operators (`iadm alerts`)."""
