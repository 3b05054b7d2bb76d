"""The guest configuration, once: `GuestSpec` with its checks, and the codecs at the edge
(TOML profile, command-line flags, file inputs). Submodules load on use, so that a command
pays only for the codecs it needs (pydantic only when a profile is read)."""
