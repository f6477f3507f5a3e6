"""tilec's deployable runtime: loads a .tilec artifact and runs it (numpy + ctypes + stdlib)."""
