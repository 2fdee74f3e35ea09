"""``python -m zsclip`` runs the command line, the same as the ``zsclip`` script."""

from .cli import run

run()
