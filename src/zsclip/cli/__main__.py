"""``python -m zsclip.cli``: the same as the ``zsclip`` command."""

from . import run

run()
