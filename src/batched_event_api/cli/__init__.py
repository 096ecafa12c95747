"""The command line: serve, send, status."""
