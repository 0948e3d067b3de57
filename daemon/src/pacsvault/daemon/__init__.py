"""pacsvaultd: the archive daemon of a pacsvault appliance."""

__version__ = "0.1.0"
