"""Heatmaps: where in an image a CLIP-family model sees a class (or any text).

    maps = image_heatmaps(encoder, [image], [classifier.weights[:, [2]].T])   # [one [H, W] array]

Below the tasks (tasks/explain.py picks which classes to explain from a head's answer and writes files),
above the encoders (towers.py reads the image tower's own modules). Methods: methods.py; grid -> image
pixels: geometry.py; the picture a person looks at: overlay.py; the one call: maps.py.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    ".maps": ["image_heatmaps"],
    ".methods": ["METHODS", "DEFAULT_METHOD", "grid_maps", "check_method"],
    ".towers": ["dense_tower", "auto_upscale"],
    ".overlay": ["overlay"],
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .maps import image_heatmaps
    from .methods import DEFAULT_METHOD, METHODS, check_method, grid_maps
    from .overlay import overlay
    from .towers import auto_upscale, dense_tower

__all__ = ["image_heatmaps", "METHODS", "DEFAULT_METHOD", "grid_maps", "check_method", "dense_tower", "auto_upscale",
           "overlay"]
