"""statecast's load harness: polling against push against the bare-websockets floor."""
