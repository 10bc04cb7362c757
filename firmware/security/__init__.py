"""Security building blocks: SASL mechanisms, the device TLS certificate, abuse controls, auth log.

Everything here is pure (no sockets, no trio, no files); the POP3 adapter wires it in.
"""
