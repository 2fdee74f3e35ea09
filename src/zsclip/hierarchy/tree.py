"""Label trees: the class hierarchy a hierarchical classifier predicts along.

A tree is read from nested YAML or JSON, or from an indented text file, validated once (unique
names, no empty nodes, sane nesting, bounded size) and then used as plain data by the modes.

Nested YAML / JSON: a mapping of name -> children, where children are nothing (a leaf), a
mapping of the same kind, or a list whose items are names (leaves), one-key mappings, or
explicit nodes ``{name: ..., synonyms: [...], descriptions: [...], children: ...}``. A name may
list synonyms after ``|``, as in labels files ("dog | puppy")::

    animal:
      dog | puppy:
        - labrador
        - {name: poodle, descriptions: ["a dog with tight curly fur."]}
      cat:
    vehicle: [car, truck]

Indented text: one node per line, children indented under their parent (spaces or tabs, not
both), ``|`` for synonyms, ``# `` comments, and ``> sentence`` lines adding a description to the
node above them::

    animal
        dog | puppy
            > a four-legged pet that barks.
            labrador
        cat
    vehicle
        car

Levels are depths (the root's children are level 1). A leaf shallower than the deepest level is
carried down, so every image gets a label at every level and per-level metrics stay defined.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

#: Bounds on what a tree file may hold: a taxonomy bigger than these is a mistake or an attack.
MAX_TREE_BYTES = 8 * 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 32
MAX_NAME_CHARS = 300
MAX_DESCRIPTIONS = 1_000  # per node
MAX_DESCRIPTION_CHARS = 2_000
#: Description sentences a whole tree may hold, counted as YAML aliases expand them (each is a prompt).
MAX_TREE_DESCRIPTIONS = 20_000
_NODE_KEYS = {"name", "synonyms", "descriptions", "children"}
ROOT = "<root>"


@dataclass
class Node:
    """One class of the tree; ``synonyms[0]`` is its display name."""

    synonyms: list[str]
    descriptions: list[str] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False, compare=False)
    depth: int = 0
    index: int = -1  # position in LabelTree.nodes (the root is -1)

    @property
    def name(self) -> str:
        return self.synonyms[0]

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def path(self) -> list[Node]:
        """Ancestors from level 1 down to this node."""
        nodes, node = [], self
        while node is not None and node.depth > 0:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]


class LabelTree:
    """A validated class hierarchy. ``nodes`` lists every node but the root, parents before
    children (depth-first, in file order); ``leaves`` are the nodes without children."""

    def __init__(self, roots: Sequence[Node], source: str = "label tree") -> None:
        self.source = source
        self.root = Node([ROOT], children=list(roots), depth=0)
        self.nodes: list[Node] = []
        stack = [(self.root, iter(self.root.children))]
        while stack:  # iterative: deep trees must not hit Python's recursion limit
            parent, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            child.parent, child.depth, child.index = parent, parent.depth + 1, len(self.nodes)
            self.nodes.append(child)
            stack.append((child, iter(child.children)))
        self.leaves = [node for node in self.nodes if node.is_leaf]
        self.depth = max(node.depth for node in self.nodes) if self.nodes else 0
        self._by_name = {}
        for node in self.nodes:
            for name in node.synonyms:
                key = name.casefold()
                if key in self._by_name:
                    other = self._by_name[key]
                    where = "" if other is node else f" (under {_parent_name(other)} and {_parent_name(node)})"
                    raise InputError(f"{source}: class name {name!r} is used twice{where}: names must be unique "
                                     "in the whole tree (add the parent's name, e.g. 'red circle')")
                self._by_name[key] = node
        if len(self.leaves) < 2:
            raise InputError(f"{source}: the tree has {len(self.leaves)} leaf class(es): name at least two")

    # --- lookups ---------------------------------------------------------------------------
    def find(self, name: str) -> Node:
        """The node called ``name`` (any synonym, case-insensitive)."""
        node = self._by_name.get(name.strip().casefold())
        if node is None:
            raise InputError(f"{name!r} is not a class of {self.source}: use one of its node names")
        return node

    def level(self, depth: int) -> list[Node]:
        """The tree cut at ``depth``: nodes at that depth plus shallower leaves (carried down)."""
        return [n for n in self.nodes if n.depth == depth or (n.is_leaf and n.depth < depth)]

    def at_level(self, node: Node, depth: int) -> Node:
        """``node``'s ancestor at ``depth`` (itself when it is a shallower leaf)."""
        path = node.path()
        return path[depth - 1] if depth <= len(path) else path[-1]

    def height(self, node: Node) -> int:
        """Levels below ``node`` in the carried-down tree (leaves at the bottom level: 0; root: depth)."""
        return self.depth - node.depth

    def lca_height(self, a: Node, b: Node, level: int | None = None) -> int:
        """Tree distance of two nodes of one level cut: the height of their lowest common ancestor
        above that level (``level`` defaults to the bottom one), as in "Making Better Mistakes"
        (Bertinetto et al., CVPR 2020). 0 when they are the same node."""
        level = self.depth if level is None else level
        if a is b:
            return 0
        ancestors = {id(n) for n in a.path()}
        for node in reversed(b.path()):
            if id(node) in ancestors:
                return level - node.depth
        return level  # only the root is common

    def level_names(self) -> list[str]:
        return [f"level{d}" for d in range(1, self.depth + 1)]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"LabelTree({len(self.nodes)} nodes, {len(self.leaves)} leaves, depth {self.depth})"

    # --- serialising -----------------------------------------------------------------------
    def to_data(self) -> list:
        """Explicit-node form (a list of {name, synonyms, descriptions, children}), JSON-ready;
        ``from_data`` reads it back to an equal tree."""
        def encode(node: Node) -> dict:
            entry: dict = {"name": node.name}
            if len(node.synonyms) > 1:
                entry["synonyms"] = node.synonyms[1:]
            if node.descriptions:
                entry["descriptions"] = list(node.descriptions)
            if node.children:
                entry["children"] = [encode(child) for child in node.children]
            return entry

        return [encode(node) for node in self.root.children]  # recursion depth <= MAX_DEPTH

    def to_text(self) -> str:
        """The indented text form (two spaces per level)."""
        lines = []
        for node in self.nodes:
            indent = "  " * (node.depth - 1)
            lines.append(indent + " | ".join(node.synonyms))
            lines += [f"{indent}  > {sentence}" for sentence in node.descriptions]
        return "\n".join(lines) + "\n"

    def signature(self) -> list:
        """Structure and names, for equality checks: (synonyms, descriptions, parent index) per node."""
        return [(n.synonyms, n.descriptions, n.parent.index if n.parent else -1) for n in self.nodes]


def _parent_name(node: Node) -> str:
    return "the top level" if node.parent is None or node.parent.depth == 0 else repr(node.parent.name)


# --- reading -------------------------------------------------------------------------------------
def read_tree(path: str | os.PathLike) -> LabelTree:
    """A tree from a file: .yaml/.yml and .json are nested, anything else is indented text."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"label tree {path} not found: write nested YAML/JSON or an indented text file")
    try:
        size = path.stat().st_size
        if size > MAX_TREE_BYTES:
            raise InputError(f"label tree {path} is {size} bytes, more than the {MAX_TREE_BYTES} allowed")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"label tree {path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as error:
        raise InputError(f"cannot read label tree {path}: {error.strerror or error}") from None
    suffix = path.suffix.lower()
    kind = "yaml" if suffix in (".yaml", ".yml") else "json" if suffix == ".json" else "text"
    return parse_tree(text, kind, source=str(path))


def parse_tree(text: str, kind: str, source: str = "label tree") -> LabelTree:
    """Parse ``text`` as "yaml", "json" or "text"; any problem is one InputError naming ``source``."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TREE_BYTES:
        raise InputError(f"{source} is more than {MAX_TREE_BYTES} bytes: split the taxonomy")
    if kind == "text":
        return LabelTree(_parse_text(text, source), source)
    if kind == "yaml":
        data = _load_yaml(text, source)
    elif kind == "json":
        data = _load_json(text, source)
    else:
        raise InputError(f"unknown tree format {kind!r}: use yaml, json or text")
    return from_data(data, source)


def from_data(data: object, source: str = "label tree") -> LabelTree:
    """A tree from already-parsed nested data (the YAML/JSON forms, or ``LabelTree.to_data()``)."""
    if data is None:
        raise InputError(f"{source} is empty: name at least two classes")
    budget = _Budget(source)
    return LabelTree(_children(data, source, 1, budget, where="the top level"), source)


class _Budget:
    """Counts nodes as they are read, so a huge or self-referencing document stops early."""

    def __init__(self, source: str) -> None:
        self.source, self.count = source, 0
        self.sentences = self.text = 0
        self.checked: dict[int, list[str]] = {}  # one list shared by YAML aliases is checked once

    def take_sentences(self, value: object, name: str) -> list[str]:
        """A node's description sentences, counted against the tree's budget of sentences and bytes
        (as aliases expand them) before any of them is checked or encoded."""
        count = len(value) if isinstance(value, list) else 1
        self.sentences += count
        if self.sentences > MAX_TREE_DESCRIPTIONS:
            raise InputError(f"{self.source} has more than {MAX_TREE_DESCRIPTIONS} description sentences (YAML "
                             "aliases count each time they are used): keep the descriptions that matter")
        if id(value) not in self.checked:
            self.checked[id(value)] = _descriptions(value, name, self.source)
        sentences = self.checked[id(value)]
        self.text += sum(len(sentence) for sentence in sentences)
        if self.text > MAX_TREE_BYTES:
            raise InputError(f"{self.source}: its description sentences add up to more than {MAX_TREE_BYTES} "
                             "characters (YAML aliases count each time they are used)")
        return list(sentences)

    def take(self) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise InputError(f"{self.source} has more than {MAX_NODES} nodes: split the taxonomy")


def _children(value: object, source: str, depth: int, budget: _Budget, where: str) -> list[Node]:
    if depth > MAX_DEPTH:
        raise InputError(f"{source}: nesting deeper than {MAX_DEPTH} levels under {where}: flatten the tree")
    if isinstance(value, dict):
        if not value:
            raise InputError(f"{source}: {where} has an empty mapping of children: list children, or leave "
                             "the value empty to make a leaf")
        return [_node(key, child, source, depth, budget) for key, child in value.items()]
    if isinstance(value, list):
        if not value:
            raise InputError(f"{source}: {where} has an empty list of children: list children, or leave the "
                             "value empty to make a leaf")
        nodes = []
        for item in value:
            if isinstance(item, dict) and "name" in item:
                nodes.append(_explicit(item, source, depth, budget))
            elif isinstance(item, dict):
                if len(item) != 1:
                    raise InputError(f"{source}: a list item under {where} maps {len(item)} names: write one "
                                     "'name: children' per item, or {name: ..., children: ...}")
                ((key, child),) = item.items()
                nodes.append(_node(key, child, source, depth, budget))
            elif isinstance(item, list):
                raise InputError(f"{source}: a list directly inside a list under {where}: give the inner list "
                                 "a parent name ('parent: [a, b]')")
            else:
                nodes.append(_node(item, None, source, depth, budget))
        return nodes
    raise InputError(f"{source}: children of {where} must be a mapping or a list, not {_kind(value)}")


def _node(key: object, children: object, source: str, depth: int, budget: _Budget) -> Node:
    budget.take()
    synonyms = _names(key, source)
    node = Node(synonyms)
    if children is not None:
        node.children = _children(children, source, depth + 1, budget, where=repr(synonyms[0]))
    return node


def _explicit(item: dict, source: str, depth: int, budget: _Budget) -> Node:
    budget.take()
    unknown = set(map(str, item)) - _NODE_KEYS
    if unknown:
        raise InputError(f"{source}: node {item.get('name')!r} has unknown key(s) {', '.join(sorted(unknown))}: "
                         "use name, synonyms, descriptions, children")
    synonyms = _names(item["name"], source)
    extra = item.get("synonyms")
    if extra is not None:
        if isinstance(extra, str):
            extra = [extra]
        if not isinstance(extra, list):
            raise InputError(f"{source}: synonyms of {synonyms[0]!r} must be a list of names")
        for name in extra:
            synonyms += _names(name, source)
    node = Node(synonyms, budget.take_sentences(item.get("descriptions"), synonyms[0])
                if item.get("descriptions") is not None else [])
    if item.get("children") is not None:
        node.children = _children(item["children"], source, depth + 1, budget, where=repr(synonyms[0]))
    return node


def _names(value: object, source: str) -> list[str]:
    if not isinstance(value, str):
        raise InputError(f"{source}: node name {value!r} is {_kind(value)}, not text: quote it")
    names = [part.strip() for part in value.split("|")]
    if any(not name for name in names):
        raise InputError(f"{source}: empty node name in {value!r}: every node and synonym needs a name")
    for name in names:
        _check_text(name, MAX_NAME_CHARS, "node name", source)
    return names


def _descriptions(value: object, name: str, source: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{source}: descriptions of {name!r} must be a list of sentences")
    if len(value) > MAX_DESCRIPTIONS:
        raise InputError(f"{source}: {name!r} has {len(value)} descriptions, more than {MAX_DESCRIPTIONS}")
    sentences = [v.strip() for v in value]
    if any(not s for s in sentences):
        raise InputError(f"{source}: {name!r} has an empty description: remove it")
    for sentence in sentences:
        _check_text(sentence, MAX_DESCRIPTION_CHARS, "description", source)
    return sentences


def _check_text(text: str, limit: int, what: str, source: str) -> None:
    if len(text) > limit:
        raise InputError(f"{source}: {what} {text[:40]!r}... is {len(text)} characters, more than {limit}")
    if any(ord(c) < 32 for c in text):
        raise InputError(f"{source}: {what} {text[:40]!r} contains control characters: remove them")


def _kind(value: object) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a true/false value"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


#: Flow nesting ([ and {) a YAML tree may have before it is parsed: libyaml composes nodes
#: recursively on the C stack, where ``"[" * 100_000`` crashes the process instead of raising.
MAX_FLOW_NESTING = 4 * MAX_DEPTH + 8


def _flow_nesting(text: str) -> int:
    """The deepest [ / { nesting outside quoted scalars and comments (a cheap linear scan)."""
    depth = deepest = 0
    quote = None
    comment = False
    previous = "\n"
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote is not None:
            quote = None if char == quote else quote
        elif char in "\"'" and previous in " \t\n[{,:-?":  # where YAML starts a quoted scalar
            quote = char
        elif char == "#":
            comment = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
        previous = char
    return deepest


def _load_yaml(text: str, source: str) -> object:
    import yaml

    if _flow_nesting(text) > MAX_FLOW_NESTING:
        raise InputError(f"{source}: nesting too deep to read (at most {MAX_DEPTH} levels)")

    class StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built with it
        """SafeLoader (no Python objects are ever built) that refuses repeated keys, which plain
        YAML silently collapses to the last one: a sibling would vanish from the taxonomy."""

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                mark = key_node.start_mark
                raise InputError(f"{source}: line {mark.line + 1}: {key!r} is given twice in one mapping: "
                                 "names must be unique")
            if isinstance(key, (list, dict)):
                raise InputError(f"{source}: line {key_node.start_mark.line + 1}: a mapping key must be a name")
            seen.add(key)
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)  # the safe base's own

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except InputError:
        raise
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"{source}: not valid YAML: {where}{problem}") from None
    except RecursionError:
        raise InputError(f"{source}: nesting too deep to read (at most {MAX_DEPTH} levels)") from None
    except (ValueError, TypeError, OverflowError) as error:  # e.g. a timestamp or number out of range
        raise InputError(f"{source}: not valid YAML: {error}") from None


def _load_json(text: str, source: str) -> object:
    def pairs(items: list) -> dict:
        seen = {}
        for key, value in items:
            if key in seen:
                raise InputError(f"{source}: {key!r} is given twice in one object: names must be unique")
            seen[key] = value
        return seen

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise InputError(f"{source}: not valid JSON: line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise InputError(f"{source}: nesting too deep to read (at most {MAX_DEPTH} levels)") from None


def _parse_text(text: str, source: str) -> list[Node]:
    """Indented lines -> nodes. A stack of (indent, node) holds the current branch; a line indented
    more than the top is its child, one indented like an entry of the stack is that entry's sibling,
    anything else is an indentation error, as in Python."""
    top = Node([ROOT])
    stack: list[tuple[int, Node]] = [(-1, top)]
    child_indent: dict[int, int] = {}  # id(parent) -> the indent its children use
    indent_char = None
    last: Node | None = None
    count = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}: line {number}"
        if stripped.startswith(">"):
            if last is None:
                raise InputError(f"{where}: a '>' description before any node: put it under the node it describes")
            last.descriptions += _descriptions(stripped[1:].strip(), last.name, where)
            if len(last.descriptions) > MAX_DESCRIPTIONS:
                raise InputError(f"{where}: {last.name!r} has more than {MAX_DESCRIPTIONS} descriptions")
            continue
        body = raw.lstrip(" \t")
        indentation = raw[: len(raw) - len(body)]
        if indentation:
            if len(set(indentation)) > 1 or (indent_char is not None and indentation[0] != indent_char):
                raise InputError(f"{where}: indentation mixes tabs and spaces: use one of them")
            indent_char = indentation[0]
        level = len(indentation)
        if level <= stack[-1][0]:
            indents = [indent for indent, _ in stack]
            if level not in indents:
                raise InputError(f"{where}: the indentation of {stripped[:40]!r} matches no enclosing level: "
                                 "line it up with its siblings")
            del stack[indents.index(level):]
        parent = stack[-1][1]
        expected = child_indent.setdefault(id(parent), level)
        if expected != level:
            raise InputError(f"{where}: {stripped[:40]!r} is indented differently from the nodes above it at "
                             "its level: line siblings up")
        if len(stack) > MAX_DEPTH:
            raise InputError(f"{where}: nesting deeper than {MAX_DEPTH} levels: flatten the tree")
        count += 1
        if count > MAX_NODES:
            raise InputError(f"{source} has more than {MAX_NODES} nodes: split the taxonomy")
        node = Node(_names(body.rstrip(), where))
        parent.children.append(node)
        stack.append((level, node))
        last = node
    if not top.children:
        raise InputError(f"{source} has no classes: write one node per line, children indented")
    return top.children
