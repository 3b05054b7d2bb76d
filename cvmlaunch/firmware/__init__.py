"""Firmware image parsers: bytes in, typed objects out. No I/O."""
