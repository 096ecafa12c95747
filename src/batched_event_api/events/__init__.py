"""Request bodies to event times and CSV rows. Pure: no I/O, no clock."""
