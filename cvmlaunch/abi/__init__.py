"""Byte layouts and numbers from the specifications. Pure: no I/O, nothing of ours imported."""
