"""``zsclip search``: the inputs nearest to a text or an image (a store answers without decoding)."""

from __future__ import annotations

import click

from ..outputs.text import printable
from .common import (
    UsageFailure,
    image_options,
    note_video_options_for,
    ray_options,
    ray_settings,
    run_options,
    runtime_only_option,
    usage_errors,
)


@click.command()
@click.argument("store_path", metavar="INPUT")
@click.argument("query", required=False)
@click.option("--image", "image_path", type=click.Path(dir_okay=False), default=None,
              help="Search with an image instead of text.")
@click.option("--top-k", "-k", default=10, show_default=True, type=click.IntRange(min=1, max=100_000))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the results (rank, path, score) to .csv, .jsonl, .json or .parquet (by extension).")
@click.option("--model", "-m", default=None,
              help="For images or a clip-retrieval folder: the model to encode with (a store uses its own).")
@click.option("--pretrained", default=None, help="Weights for an open_clip --model name.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--exact", is_flag=True, help="Score every stored row, even when the store has an index.")
@runtime_only_option
@image_options
@ray_options
def search(store_path, query, image_path, top_k, output, model, pretrained, device, exact, batch_size, workers,
           max_pixels, decode, url_timeout, ray_address, ray_actors, ray_stall_timeout) -> None:
    """The inputs nearest to QUERY (a text) or --image, by cosine similarity, best first.

    INPUT is an embedding store from `zsclip embed` (answers from the stored embeddings, no image
    decoded; through its index when `zsclip index` made one, candidates rescored exactly), a
    clip-retrieval output folder (with --model), or images, a folder or shards (encoded on the way).

    Inputs that cannot be read (a missing path, a file that does not decode) are each one line on
    stderr and a row with its error in --output; the exit status is then 1. A missing INPUT is
    reported before any model loads.

    \b
    Examples:
      zsclip search photos.zse "a forklift in the rain" --top-k 20
      zsclip search photos.zse --image example.jpg -o nearest.csv
    """
    import sys

    from ..tasks.search import search as run_search

    if (query is None) == (image_path is None):
        raise UsageFailure("give a text QUERY or --image FILE (one of them)")
    options = run_options(device, "fp32", batch_size, workers, max_pixels, url_timeout, decode)
    ray = ray_settings(ray_address, ray_actors, ray_stall_timeout)
    with usage_errors():
        note_video_options_for([store_path])
        hits = run_search(store_path, query, image=image_path, top_k=top_k, model=model, pretrained=pretrained,
                          options=options, output=output, ray=ray, exact=exact)
    if not output:
        for hit in hits:
            span = "" if hit.start is None else f"  [{hit.start:.2f}-{hit.end:.2f} s]"
            click.echo(f"{hit.rank:4d}. {hit.score:.4f}  {printable(hit.source)}{span}")
    failures = hits.failures
    for failure in failures[:20]:  # as classify: one line per input that could not be read
        click.echo(f"zsclip: skipped {printable(failure['path'])}: {printable(failure['error'])}", err=True)
    if len(failures) > 20:
        click.echo(f"zsclip: ... and {len(failures) - 20} more inputs could not be read"
                   + (" (all listed in the results)" if output else ""), err=True)
    if output or failures:
        unread = f"; {len(failures)} input{'s' if len(failures) > 1 else ''} could not be read" if failures else ""
        click.echo(f"zsclip: {len(hits)} result{'' if len(hits) == 1 else 's'}{unread}"
                   + (f"; in {printable(output)}" if output else ""), err=True)
    sys.exit(1 if failures else 0)
