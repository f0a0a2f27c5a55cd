//! CRI log files: the container's stdout and stderr, read from the FIFOs the shim writes, as `RFC3339Nano stream P|F message` lines.
