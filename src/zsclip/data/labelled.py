"""What every labelled collection is made of, whichever reader opened it (folders, manifests, WebDataset
shards, Hugging Face datasets): sources with their class index or label set, and the collection itself.
A module of its own so that each reader, and the dispatch above them (``collections.open_collection``),
imports it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass, field

from .sources import Source


@dataclass(frozen=True)
class LabelledSource(Source):
    """An image source with the index of its true class."""

    target: int = -1


@dataclass(frozen=True)
class MultiLabelSource(Source):
    """An image source with the indices of every label it has (empty: none of them)."""

    labels: tuple[int, ...] = ()


@dataclass
class LabelledCollection:
    """Class names (display form) and the labelled sources, in a stable order; or, for WebDataset,
    the shards whose samples are streamed when evaluated."""

    classnames: list[str]
    items: list[LabelledSource]
    shards: list[str] = field(default_factory=list)
    #: multi-label collections (a manifest's ``labels``): the label indices of each item; an item's
    #: ``target`` is then its position here, so every runner carries it as it carries a class index
    label_sets: list[tuple[int, ...]] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    def labelled_sources(self) -> list[Source]:
        """The items as sources that carry their labels: ``LabelledSource``s (a class index each), or
        for a multi-label collection ``MultiLabelSource``s (a label set each); what ``embed`` stores."""
        if self.label_sets is None:
            return list(self.items)
        return [MultiLabelSource(item.name, item.error, labels=self.label_sets[index])
                for index, item in enumerate(self.items)]


__all__ = ["LabelledSource", "MultiLabelSource", "LabelledCollection"]
