"""The ``imd`` command: one entry point whose subcommands reach every part of the system."""

__version__ = "0.1.0"
