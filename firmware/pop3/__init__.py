"""POP3 service of the device: sans-IO protocol core, framing, auth, and the trio server."""
