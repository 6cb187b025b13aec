"""The cluster on Redis: room leases, followers and the forwarding of actions to owners."""
