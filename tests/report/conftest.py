"""The report card's tests reuse the POP3 service fixtures (a real Pop3Service on a tmp image)."""

from tests.console.conftest import (  # noqa: F401
    clock,
    image,
    live_device,
    live_term,
    offline_shell,
    offline_term,
)
from tests.http.conftest import lab  # noqa: F401
from tests.pop3.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    board,
    ca_file,
    client_context,
    device_cert,
    image_path,
    live_profile,
    pop3,
    tls_ca,
    tls_pop3,
)
