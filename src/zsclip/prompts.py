"""Prompt templates and class lists: pure data, validated once, before any model runs.

Built-in template sets come from open_clip's ImageNet metadata (the references' own lists), so
zsclip and open_clip build the same prompts by construction instead of by retyping.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .data.textfiles import read_text_file
from .errors import InputError

#: Used when ``templates`` is not given: OpenAI's 80-prompt ensemble, the CLIP paper's best
#: ImageNet setting. The fast build and the cache make its cost a one-off.
DEFAULT_TEMPLATES = "openai-imagenet"
_PLACEHOLDER_PROBE = "\x00class\x00"
#: Bounds on what users hand in: a template's and a class name's length, and the prompts one build
#: may expand to (classes x synonyms x templates; ImageNet-21k x 80 templates is 1.7 million).
MAX_TEMPLATE_CHARS = 1000
MAX_NAME_CHARS = 1000
MAX_PROMPTS = 2_000_000


@dataclass(frozen=True)
class Template:
    """One prompt template: ``text`` shows it with ``{}``; ``fill`` makes the prompt for a name."""

    text: str
    fill: Callable[[str], str]

    def __call__(self, name: str) -> str:
        return self.fill(name)


def _open_clip_metadata():
    """open_clip's ``zero_shot_metadata`` (OpenAI's templates and ImageNet names): the same module, read
    without importing the ``open_clip`` package when that is not loaded yet (its ``__init__`` imports torch,
    torchvision and more: seconds), so a store classified with a cached classifier stays fast."""
    import importlib.util
    import sys

    name = "open_clip.zero_shot_metadata"
    if name in sys.modules or "open_clip" in sys.modules:
        return importlib.import_module(name)
    own = "zsclip._open_clip_zero_shot_metadata"
    if own in sys.modules:
        return sys.modules[own]
    package = importlib.util.find_spec("open_clip")
    if package is None or not package.submodule_search_locations:
        return importlib.import_module(name)  # not installed: the import says so
    path = Path(package.submodule_search_locations[0]) / "zero_shot_metadata.py"
    spec = importlib.util.spec_from_file_location(own, path)
    if spec is None or spec.loader is None or not path.is_file():
        return importlib.import_module(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # plain lists of names and lambdas, no imports
    sys.modules[own] = module
    return module


def _from_open_clip(attribute: str) -> list[Template]:
    return [_callable_template(fn) for fn in getattr(_open_clip_metadata(), attribute)]


TEMPLATE_SETS: dict[str, Callable[[], list[Template]]] = {
    "openai-imagenet": lambda: _from_open_clip("OPENAI_IMAGENET_TEMPLATES"),
    "openai-imagenet-7": lambda: _from_open_clip("SIMPLE_IMAGENET_TEMPLATES"),
    "photo": lambda: [_string_template("a photo of a {}.")],
}


def _classnames_from_open_clip() -> list[str]:
    return list(_open_clip_metadata().IMAGENET_CLASSNAMES)


#: Named class lists. ImageNet-1k is open_clip's (OpenAI's cleaned names); it repeats two names
#: ("missile", "sunglasses") for distinct synsets, which named lists are allowed to do.
CLASSNAME_SETS: dict[str, Callable[[], list[str]]] = {"imagenet1k": _classnames_from_open_clip}


def resolve_templates(spec: str | Path | Sequence[str | Callable[[str], str]] | None) -> list[Template]:
    """Templates from a set name, a text file (one per line), or a list of strings / callables."""
    if spec is None:
        spec = DEFAULT_TEMPLATES
    if isinstance(spec, str) and spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]()
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(f"unknown template set {str(spec)!r}: use one of {', '.join(TEMPLATE_SETS)} "
                             "or a text file with one template per line")
        lines = _read_lines(path, "template file")
        if not lines:
            raise InputError(f"template file {path} has no templates: write one per line, e.g. 'a photo of a {{}}.'")
        return [_string_template(line, source=str(path)) for line in lines]
    templates = [_callable_template(t) if callable(t) else _string_template(t) for t in spec]
    if not templates:
        raise InputError("templates is empty: pass at least one, e.g. ['a photo of a {}.'], or a set name")
    return templates


def resolve_classes(classnames: str | Sequence[str | Sequence[str]]) -> tuple[list[list[str]], bool]:
    """Classes as lists of synonyms (first = display name); True when from a named list.

    A class is a name or a list of names (synonyms): all their prompts join that class's mean.
    Empty lists, empty names and names used twice are errors (a named list may repeat names).
    """
    if isinstance(classnames, str):
        if classnames not in CLASSNAME_SETS:
            raise InputError(f"unknown class list {classnames!r}: pass a list of names, or one of "
                             f"{', '.join(CLASSNAME_SETS)}")
        return [[name] for name in CLASSNAME_SETS[classnames]()], True
    classes = [[entry] if isinstance(entry, str) else list(entry) for entry in classnames]
    if not classes:
        raise InputError("no class names given: pass at least two, e.g. ['dog', 'cat']")
    seen: dict[str, int] = {}
    for index, names in enumerate(classes):
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise InputError(f"class #{index + 1} has an empty name: every class needs at least one name")
        for name in names:
            if len(name) > MAX_NAME_CHARS:
                raise InputError(f"class #{index + 1} has a name of {len(name)} characters, over the limit of "
                                 f"{MAX_NAME_CHARS}")
            key = name.strip().casefold()
            if key in seen:
                raise InputError(f"class name {name!r} is given twice (classes #{seen[key] + 1} and "
                                 f"#{index + 1}): remove one, or make it a synonym of a single class")
            seen[key] = index
    return [[n.strip() for n in names] for names in classes], False


def expand_prompts(classes: Sequence[Sequence[str]], templates: Sequence[Template]) -> list[list[str]]:
    """Prompts per class: every template applied to every synonym, in the reference's order."""
    count = sum(len(names) for names in classes) * len(templates)
    if count > MAX_PROMPTS:
        raise InputError(f"{count} prompts ({sum(map(len, classes))} names x {len(templates)} templates) is over "
                         f"the limit of {MAX_PROMPTS}: use fewer templates (e.g. openai-imagenet-7)")
    return [[template(name) for name in names for template in templates] for names in classes]


def parse_synonyms(entry: str) -> list[str]:
    """One class written as ``dog | puppy``: its names, first = display name (the one label syntax)."""
    return [name.strip() for name in entry.split("|") if name.strip()]


def parse_labels(text: str) -> list[list[str]]:
    """Classes from a comma-separated string: ``"dog|puppy,cat,car"`` -> [["dog", "puppy"], ["cat"], ["car"]].

    An entry with no name (``"dog,,cat"``) is kept as an empty class so that ``resolve_classes``
    names its position in the error.
    """
    if not text or not text.strip():
        raise InputError('no labels: pass e.g. "dog,cat,car" (synonyms joined by |: "dog|puppy,cat")')
    return [parse_synonyms(entry) for entry in text.split(",")]


def read_labels(path: str | Path) -> list[list[str]]:
    """Read a labels file: one class per line, synonyms separated by ``|``, ``#`` comments."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"labels file {path} not found: write one class per line (synonyms: 'dog | puppy')")
    classes = []
    for number, line in _numbered_lines(path, "labels file"):
        names = parse_synonyms(line)
        if not names:
            raise InputError(f"labels file {path}, line {number}: no class name in {line!r} (synonyms: 'dog | puppy')")
        classes.append(names)
    if not classes:
        raise InputError(f"labels file {path} has no class names: write one class per line")
    return classes


def _string_template(text: str, source: str = "templates") -> Template:
    """A template string: text with ``{}`` (or ``{0}``) where the class name goes, nothing else.

    Format specs, conversions and named fields are refused: ``{:>1000000000}`` would allocate a
    gigabyte per prompt, ``{0.__class__}`` reads attributes."""
    if not isinstance(text, str):
        raise InputError(f"template {text!r} in {source} is neither a string nor a callable")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise InputError(f"a template in {source} is {len(text)} characters long, over the limit of "
                         f"{MAX_TEMPLATE_CHARS}")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text)
                  if name is not None]
    except ValueError as error:
        raise InputError(f"template {text!r} in {source} is not a valid template ({error}): use {{}} where the "
                         "class name goes, and {{ }} for literal braces") from None
    for name, spec, conversion in fields:
        if name not in ("", "0") or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(f"template {text!r} in {source} has {shown}: only {{}} (the class name) is allowed")
    if len({name for name, _, _ in fields}) > 1:
        raise InputError(f"template {text!r} in {source} mixes {{}} and {{0}}: use {{0}} everywhere")
    if sum(1 for name, _, _ in fields if name == "") > 1:
        raise InputError(f"template {text!r} in {source} has more than one {{}}: write {{0}} for each place the "
                         "class name goes")
    if not fields:
        raise InputError(f"template {text!r} in {source} has no {{}} placeholder: write e.g. 'a photo of a {{}}.'")
    return Template(text, text.format)


def _callable_template(fn: Callable[[str], str]) -> Template:
    try:
        probe = fn(_PLACEHOLDER_PROBE)
    except Exception as error:  # a user's callable: any failure is a bad template
        raise InputError(f"template callable {fn!r} failed on a class name ({type(error).__name__}: {error})") from None
    if not isinstance(probe, str) or _PLACEHOLDER_PROBE not in probe:
        raise InputError(f"template callable {fn!r} must return a string containing the class name")
    return Template(probe.replace(_PLACEHOLDER_PROBE, "{}"), fn)


def _read_lines(path: Path, what: str) -> list[str]:
    """Non-empty lines; a line whose first non-blank character is ``#`` is a comment (``C#`` is a label)."""
    return [line for _, line in _numbered_lines(path, what)]


def _numbered_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are neither blank nor comments."""
    text = read_text_file(path, what)
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]
