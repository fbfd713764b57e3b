"""Layer 8: the ``kdbts`` command and its sub-commands."""
