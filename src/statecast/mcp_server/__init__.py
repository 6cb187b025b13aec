"""``statecast mcp``: an LLM agent's seat in a room, over the Model Context Protocol.

The room's actions become MCP tools (each taking effect exactly once, retries
included), its state an MCP resource with change notifications, and "what changed
since I last looked" a tool (docs/agents.md). Only :mod:`.cli` is imported to register
the command; the rest needs the optional ``mcp`` extra, and the server and the protocol
never import this package.
"""
