"""The ``medfool`` command: thin wrappers that parse, build from registries and call the library."""
