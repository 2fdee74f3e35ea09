"""``zsclip search``: the stored images nearest to a text or an image."""

from __future__ import annotations

import click

from ..data.images import load_image
from ..outputs.text import printable
from ..store import EmbeddingStore
from ..tasks.models import resolve_model
from ..tasks.stored import search_store
from .common import UsageFailure, usage_errors


@click.command()
@click.argument("store_path", metavar="STORE")
@click.argument("query", required=False)
@click.option("--image", "image_path", type=click.Path(dir_okay=False), default=None,
              help="Search with an image instead of text.")
@click.option("--top-k", "-k", default=10, show_default=True, type=click.IntRange(min=1, max=100_000))
@click.option("--model", "-m", default=None, help="Only for a clip-retrieval folder: the model that made it.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
def search(store_path, query, image_path, top_k, model, device) -> None:
    """The images of STORE nearest to QUERY (a text) or --image, by cosine similarity, best first.

    \b
    Examples:
      zsclip search photos.zse "a forklift in the rain" --top-k 20
      zsclip search photos.zse --image example.jpg
    """
    from .. import RunOptions

    if (query is None) == (image_path is None):
        raise UsageFailure("give a text QUERY or --image FILE (one of them)")
    with usage_errors():
        store = EmbeddingStore.open(store_path, model=model)
        encoder = resolve_model(store.model, store.pretrained, RunOptions(device=device))
        store.check_encoder(encoder)
        if image_path:
            pixels = encoder.preprocess(load_image(image_path, encoder.image_size))[None]
            features = encoder.encode_images(pixels, "fp32")[0]
        else:
            features = encoder.encode_text([query], precision="fp32")[0]
        results = search_store(store, features, top_k)
    for rank, (path, score) in enumerate(results, start=1):
        click.echo(f"{rank:4d}. {score:.4f}  {printable(path)}")
