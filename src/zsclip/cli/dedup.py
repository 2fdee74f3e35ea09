"""``zsclip dedup``: near-duplicate images of a store, one representative per group, the rest listed."""

from __future__ import annotations

import click

from ..outputs.text import printable
from .common import usage_errors


@click.command("dedup")
@click.argument("store_path", metavar="STORE")
@click.option("--threshold", default=0.95, show_default=True, type=click.FloatRange(-1.0, 1.0),
              help="Cosine similarity at or above which two images are duplicates.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the duplicates (group, path, representative, similarity) to this .csv file.")
@click.option("--neighbours", default=16, show_default=True, type=click.IntRange(1, 1000),
              help="Neighbours looked at per image (larger groups still join through their members).")
def dedup_command(store_path, threshold, output, neighbours) -> None:
    """Find groups of near-duplicate images in STORE (resized, re-compressed or slightly cropped copies).

    Each group keeps one representative: the largest image, the first added among equals; every other
    member is a row of --output with its representative and their cosine similarity. Uses the store's
    index when `zsclip index` made one (else every pair is scored: index large stores first).

    \b
    Examples:
      zsclip dedup photos.zse --threshold 0.95 -o duplicates.csv
    """
    from ..tasks import dedup

    with usage_errors():
        report = dedup.find_duplicates(store_path, threshold, output=output, neighbours=neighbours)
    if not output:
        for dup in report.duplicates:
            click.echo(f"{dup.group}\t{printable(dup.path)}\t{printable(dup.representative)}\t{dup.similarity:.4f}")
    click.echo(f"zsclip: {len(report.duplicates)} duplicate{'s' if len(report.duplicates) != 1 else ''} in "
               f"{report.groups} group{'s' if report.groups != 1 else ''} among {report.rows:,} images "
               f"(threshold {threshold}{'' if report.indexed else ', no index: every pair scored'})"
               + (f"; in {printable(output)}" if output else ""), err=True)
