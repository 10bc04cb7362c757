"""Protocol-aware fault injection (docs/faults.md): what a fault is, the plan that fires them.

Sans I/O: `spec` parses and checks one fault (JSON object or TOML table), `plan` keeps the
active faults, matches them against the events the POP3 service and the device report, and
tells subscribers (the fault log, /metrics, the report card) what fired. The POP3 adapter
(firmware/pop3/server.py) and the device (firmware/device/device.py) apply the decisions.
"""
