"""Mailboxes and messages over the flash log (see docs/storage.md)."""
