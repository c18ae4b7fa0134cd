"""The terminal UI served to browsers (``medpix-tui serve``): an interface layer, like ``tui``."""

#: Set in every served app's environment: the app then writes nothing on the server.
SERVED_ENV = "MEDPIX_SERVED"
