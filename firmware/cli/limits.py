"""The address-space floor: what `dpfw` says when RLIMIT_AS is too small for it to run.

A process under a small `ulimit -v` fails in odd places: Python raises MemoryError, or a C
extension (Pillow, cryptography) fails to load with ImportError "failed to map segment". Both
become one line naming the limit in force and the floor measured for the heaviest command.
"""

from __future__ import annotations

import resource

MIB = 1024 * 1024

# Measured (docs/reliability.md, "Address-space floor"): `dpfw run` with a pty console boots
# and serves at 72 MiB and fails at 64 (88 MiB with the control socket's HTTP stack, which a
# smaller limit skips with a warning); `image demo` (Pillow, cryptography) works at 80 and
# fails at 64; `image inspect` works at 32. 96 leaves a margin. Scan jobs need the profile's
# memory.image_ram_mib on top (a job over the host's limit fails as that job only).
FLOOR_MIB = 96


def address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, or None when there is none."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def memory_message(detail: str = "out of memory") -> str:
    """The one line for a MemoryError or a failed load: names the limit and the floor."""
    limit = address_space_limit()
    if limit is None:
        return f"{detail}: the host has no memory to spare for dpfw"
    return (
        f"the address-space limit (RLIMIT_AS {limit // MIB} MiB) is too small ({detail}): "
        f"dpfw needs at least {FLOOR_MIB} MiB"
    )
