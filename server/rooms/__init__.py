"""Room types that ship with statecast."""
