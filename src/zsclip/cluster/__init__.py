"""zsclip on Ray Data: the same pipeline, spread over a cluster (``--ray auto`` or an address).

Inputs become a Ray Dataset; decoding and preprocessing run as CPU tasks; encoding runs in an
actor pool whose actors load the model once (one GPU each where there are GPUs); results stream
back to the driver, which writes the embedding store's shards (``zsclip.store``) or aggregates
metrics from per-block counts. Needs the ``ray`` extra: ``pip install "zsclip[ray]"``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

#: name -> the module that defines it, loaded on first use (see zsclip._lazy)
_EXPORTS = {
    ".session": ["RaySettings", "connect", "ray_available"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .session import RaySettings, connect, ray_available

__all__ = ["RaySettings", "connect", "ray_available"]
