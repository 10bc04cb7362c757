"""A board image with its profile: the one place a stored profile becomes a `Profile`.

The store (firmware.store.board) keeps the profile as TOML text and enforces a `StoreLimits`
value; it never reads a profile. Everything that needs the image's profile or opens an image for
use goes through here:

- `open_board(path)` opens, reads the saved profile (firmware.config.profile.from_stored: an
  image from another firmware version is fitted to this schema, with warnings, once per open)
  and gives the store the saved profile's limits;
- `saved_profile(board)` / `save_profile(board, profile)` read and write the saved profile;
- `create_board(path, profile, admin_password)` makes a new image with the device certificate
  a new device leaves the factory with (firmware.security.tls);
- `limits_of(profile)` is the store's limits as a profile sets them (a running device gives
  the store those of its *running* profile).
"""

from __future__ import annotations

import weakref
from pathlib import Path

from firmware.config.profile import Profile, from_stored
from firmware.store.board import Board, MiB, StoreLimits

__all__ = ["create_board", "limits_of", "open_board", "save_profile", "saved_profile"]

# Board -> (the TOML text it was read from, the Profile): parsed once per text and open board.
_profiles: weakref.WeakKeyDictionary[Board, tuple[str, Profile]] = weakref.WeakKeyDictionary()


def limits_of(profile: Profile) -> StoreLimits:
    """The store's limits as `profile` sets them (mailbox.*, storage.compact_threshold_pct)."""
    return StoreLimits(
        max_boxes=profile.int("mailbox.max_boxes"),
        max_messages=profile.int("mailbox.max_messages"),
        quota_mib=profile.int("mailbox.quota_mib"),
        compact_threshold_pct=profile.int("storage.compact_threshold_pct"),
    )


def saved_profile(board: Board) -> Profile:
    """The profile in the board's NVRAM, fitted to this firmware's schema.

    ImageError if the stored text is not TOML or names no known model; other misfits fall back
    to factory values with a warning (firmware.config.profile.from_stored).
    """
    text = board.profile_toml
    cached = _profiles.get(board)
    if cached is not None and cached[0] == text:
        return cached[1]
    profile = from_stored(text, f"{board.path} profile")
    _profiles[board] = (text, profile)
    return profile


def save_profile(board: Board, profile: Profile) -> None:
    """Make `profile` the saved profile (atomic NVRAM update); the store enforces its limits.

    A running device sets the limits of its running profile afterwards (Device.apply_profile).
    """
    text = profile.to_toml()
    board.set_profile_toml(text)
    _profiles[board] = (text, profile)
    board.limits = limits_of(profile)


def open_board(path: Path, *, repair: bool = True) -> Board:
    """Board.open, then the saved profile read and its limits set; ImageError as Board.open.

    A profile that had to be fitted to this schema (warnings logged) is kept fitted in memory
    and reaches NVRAM with the next update, so the warnings do not repeat at every boot.
    """
    board = Board.open(path, repair=repair)
    try:
        profile = saved_profile(board)
        fitted = profile.to_toml()
        if fitted != board.profile_toml:  # written by another firmware version
            board.refit_profile_toml(fitted)
            _profiles[board] = (fitted, profile)
        board.limits = limits_of(profile)
    except BaseException:
        board.close()
        raise
    return board


def create_board(
    path: Path, profile: Profile, admin_password: str, *, size: int | None = None
) -> Board:
    """A new image holding `profile`, the admin password and a fresh device certificate.

    `size` in bytes defaults to the profile's storage.flash_mib. Every device leaves the
    factory with its own certificate naming identity.hostname, as real copiers do.
    """
    # cryptography is a slow import: only image creation needs it here.
    from firmware.security.tls import device_certificate_settings

    if size is None:
        size = profile.int("storage.flash_mib") * MiB
    certificate = device_certificate_settings(profile.str("identity.hostname"))
    settings = {k: v for k, v in certificate.items() if v is not None}
    text = profile.to_toml()
    board = Board.create(Path(path), text, admin_password, size=size, settings=settings)
    _profiles[board] = (text, profile)
    board.limits = limits_of(profile)
    return board
