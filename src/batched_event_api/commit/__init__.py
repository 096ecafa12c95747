"""The durable local commit: window policy, group commit, the writer, its journal and part files, the disk."""
