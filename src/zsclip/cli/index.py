"""``zsclip index``: build or extend the ANN index beside a store's shards (search and dedup then use it)."""

from __future__ import annotations

import click

from ..outputs.text import printable
from .common import UsageFailure, ray_settings, usage_errors


@click.command("index")
@click.argument("store_path", metavar="STORE")
@click.option("--rebuild", is_flag=True, help="Build every part again instead of extending the index.")
@click.option("--lists", type=click.IntRange(min=0), default=None,
              help="Inverted lists per part (default: about sqrt(rows); 0 = flat, every row scored).")
@click.option("--probes", type=click.IntRange(min=1), default=None,
              help="Lists scanned per query (default: 1/128 of the lists, at least 8): more = higher recall, slower.")
@click.option("--check", type=click.IntRange(min=0), default=100, show_default=True,
              help="Sampled rows searched with the index and exactly, to report recall@10 (0 = skip).")
@click.option("--remove", "drop", is_flag=True, help="Delete the store's index (search is then exact).")
@click.option("--ray", "ray_address", default=None, metavar="auto|ADDRESS",
              help="Build each part (a group of shards) in a Ray task: auto = $RAY_ADDRESS, else a local Ray.")
def index_command(store_path, rebuild, lists, probes, check, drop, ray_address) -> None:
    """Build or extend the ANN index of STORE (a store from `zsclip embed`), beside its shards.

    The index is FAISS inverted lists over the stored embeddings; `zsclip search` and `zsclip dedup`
    use it, rescoring each candidate exactly with the stored embedding. Run it again after `zsclip
    embed` adds images: new shards are added, rows deleted since are never returned, parts whose
    shards were rewritten are rebuilt. Until then, shards not in the index are searched exactly.

    \b
    Examples:
      zsclip index photos.zse
      zsclip index photos.zse --rebuild --probes 64
    """
    from ..tasks import indexing

    if drop and (rebuild or lists is not None or probes is not None or ray_address):
        raise UsageFailure("--remove deletes the index: leave out --rebuild, --lists, --probes and --ray")
    with usage_errors():
        report = indexing.index_store(store_path, rebuild=rebuild, lists=lists, probes=probes, check=check,
                                      ray=ray_settings(ray_address, None), drop=drop)
    if report is None:
        click.echo(f"zsclip: removed the index of {printable(store_path)}", err=True)
        return
    for line in report.dropped[:5]:
        click.echo(f"zsclip: rebuilt {printable(line)}", err=True)
    recall = ("" if report.recall is None else
              f"; recall@10 {report.recall:.3f} against exact search on {report.queries} sampled rows")
    click.echo(f"zsclip: indexed {report.rows:,} rows in {report.parts} part{'s' if report.parts != 1 else ''} "
               f"({report.built} built, {report.kept} kept) in {report.seconds:.1f} s, "
               f"{report.bytes / 1e6:.1f} MB{recall}", err=True)
