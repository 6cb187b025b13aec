"""Room types for ``statecast serve --room-type 'counter-*=mypackage.rooms:Counter'``."""
