"""Pure protocol code for the IMD gateway: bytes in, typed objects out, no I/O.

Sub-packages:
- ``protocols.mbus``: wired M-Bus link layer (EN 13757-2) and application layer (EN 13757-3).
- ``protocols.messages``: the versioned edge <-> central MQTT message schema.
"""
