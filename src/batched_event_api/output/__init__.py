"""Where finished windows go, each exactly once: the store seam and its backends, the uploader."""
