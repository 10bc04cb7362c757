"""The board image: construct layouts, the image file, NVRAM slots (see docs/storage.md)."""
