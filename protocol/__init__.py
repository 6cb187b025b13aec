"""statecast's wire protocol, without I/O: messages, codec, ops, digest and client sync."""
