"""The suite's delivery commands (``suite --help``)."""
