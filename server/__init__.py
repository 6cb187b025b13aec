"""statecast server: rooms, connections, fan-out, storage and the HTTP side."""
