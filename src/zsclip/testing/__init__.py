"""Tiny models in the real formats (open_clip local-dir, transformers save_pretrained), built offline.

zsclip's tests and benchmarks load them through the same code users take, without a model hub;
users can do the same to test their own integration. Not imported by ``import zsclip``.
"""
