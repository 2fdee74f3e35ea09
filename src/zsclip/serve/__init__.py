"""``zsclip serve``: zero-shot classification over HTTP, with a web page and dynamic batching.

Needs the ``serve`` extra (``pip install "zsclip[serve]"``: FastAPI, uvicorn, python-multipart,
prometheus-client, swagger-ui-bundle). Importing this package is cheap; ``create_app`` and the
settings load on first use, so ``zsclip --help`` works without the extra.

    from zsclip.serve import ServeSettings, create_app
    app = create_app(ServeSettings(model="demo"))   # an ASGI app: uvicorn.run(app)
"""

from __future__ import annotations

__all__ = ["create_app", "ServeSettings", "Limits"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("ServeSettings", "Limits"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'zsclip.serve' has no attribute {name!r}")
