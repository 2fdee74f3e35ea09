"""``zsclip models``: what can be loaded, and what is cached on this machine."""

from __future__ import annotations

import click


@click.command()
@click.option("--all", "show_all", is_flag=True, help="List every open_clip model and pretrained tag.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Classifier cache folder.")
def models(show_all, cache_dir) -> None:
    """What can be loaded, and what is cached on this machine."""
    from ..tasks.inventory import describe_models

    click.echo(describe_models(show_all=show_all, cache_dir=cache_dir))
