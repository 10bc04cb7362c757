"""The device's error kinds.

Two kinds only, as h11 does: `DeviceError` and its subclasses are the peer's or the
operator's fault (bad input, a limit reached) and carry a clear message; anything else
is our own bug.
"""


class DeviceError(Exception):
    """A refused operation, with a message meant for the person who asked."""


class ProfileError(DeviceError):
    """A profile file or value that does not fit the schema."""


class ImageError(DeviceError):
    """A board image that cannot be used: foreign, corrupt, newer format, or in use."""


class ImageInUseError(ImageError):
    """Another process holds the image's advisory lock."""


class CorruptRecordError(DeviceError):
    """A record whose CRC or layout does not check out ([SYS/PERM] on POP3)."""


class StorageFullError(DeviceError):
    """Flash is full even after compaction; nothing partial was stored."""


class QuotaError(DeviceError):
    """A box limit (quota, message count, number of boxes) would be exceeded."""


class MemoryFullError(DeviceError):
    """The device's image RAM budget cannot hold the request ("MEMORY FULL")."""


class BoxError(DeviceError):
    """A mailbox that does not exist, already exists, has a bad name or is in use."""


class NotFoundError(DeviceError):
    """Something named that does not exist: a box, a message, a POP3 session, a scan job, a
    tray document (HTTP 404). Front-ends map refusals by class, never by their words."""


class BoxNotFoundError(BoxError, NotFoundError):
    """No box of that name (a `BoxError` too, for callers that catch every box refusal)."""


class BadNameError(BoxError):
    """A box name the store does not allow (length, characters)."""


class ConflictError(DeviceError):
    """Not possible now, in the device's present state: a box open in a POP3 session, a
    service that is not running (HTTP 409)."""


class NotRunningError(DeviceError):
    """The device is booting, rebooting or shutting down (HTTP 503)."""


class MessageNotFoundError(BoxError, NotFoundError):
    """No message of that uid in a box (a `BoxError` too, as the store raises it)."""
