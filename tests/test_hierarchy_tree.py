"""Label tree files: the three formats, their one-line errors, bounds, and properties no input can break."""

from __future__ import annotations

import contextlib
import json
import string
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsclip.errors import InputError
from zsclip.hierarchy import tree as tree_module
from zsclip.hierarchy.tree import from_data, parse_tree, read_tree

YAML_TREE = """\
animal:
  dog | puppy:
    - labrador
    - {name: poodle, synonyms: [caniche], descriptions: ["a dog with tight curly fur."]}
  cat:
vehicle: [car, truck]
"""
TEXT_TREE = """\
# the same taxonomy, indented
animal
    dog | puppy
        labrador
        poodle | caniche
            > a dog with tight curly fur.
    cat
vehicle
    car
    truck
"""


def shape_of(tree) -> list:
    return [(node.synonyms, node.descriptions, node.depth, node.parent.name) for node in tree.nodes]


def test_yaml_json_and_text_files_give_the_same_tree(tmp_path):
    (tmp_path / "t.yaml").write_text(YAML_TREE)
    (tmp_path / "t.json").write_text(json.dumps(yaml.safe_load(YAML_TREE)))
    (tmp_path / "t.txt").write_text(TEXT_TREE)
    trees = [read_tree(tmp_path / name) for name in ("t.yaml", "t.json", "t.txt")]
    first = trees[0]
    assert [n.name for n in first.nodes] == ["animal", "dog", "labrador", "poodle", "cat", "vehicle", "car", "truck"]
    assert [n.name for n in first.leaves] == ["labrador", "poodle", "cat", "car", "truck"]
    assert first.find("Puppy").name == "dog" and first.find("caniche").name == "poodle"
    assert first.find("poodle").descriptions == ["a dog with tight curly fur."]
    assert first.depth == 3
    for other in trees[1:]:
        assert shape_of(other) == shape_of(first)


def test_levels_carry_shallow_leaves_down_and_distances_are_lca_heights():
    tree = parse_tree(YAML_TREE, "yaml")
    assert [n.name for n in tree.level(1)] == ["animal", "vehicle"]
    assert [n.name for n in tree.level(2)] == ["dog", "cat", "car", "truck"]
    assert [n.name for n in tree.level(3)] == ["labrador", "poodle", "cat", "car", "truck"]
    assert tree.at_level(tree.find("cat"), 3).name == "cat"
    assert tree.at_level(tree.find("poodle"), 1).name == "animal"
    lab, poodle, cat, car = (tree.find(n) for n in ("labrador", "poodle", "cat", "car"))
    assert tree.lca_height(lab, lab) == 0
    assert tree.lca_height(lab, poodle) == 1  # siblings under dog
    assert tree.lca_height(lab, cat) == 2  # meet at animal
    assert tree.lca_height(lab, car) == 3  # only the root is common
    assert tree.lca_height(tree.find("dog"), tree.find("truck"), level=2) == 2


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("yaml", "a:\n  b:\n  b:\n", "line 3: 'b' is given twice"),
    ("yaml", "a:\n  x:\nb:\n  x:\n", "'x' is used twice \\(under 'a' and 'b'\\)"),
    ("yaml", "a | dog:\nb:\n  Dog:\n", "'Dog' is used twice"),
    ("json", '{"a": null, "a": null}', "'a' is given twice"),
    ("yaml", "a: []\nb:\n", "'a' has an empty list of children"),
    ("yaml", "a: {}\nb:\n", "'a' has an empty mapping"),
    ("yaml", "a:\n  - ''\n  - b\n", "empty node name"),
    ("yaml", "a | :\nb:\n", "empty node name"),
    ("yaml", "yes:\nno:\n", "is a true/false value, not text: quote it"),
    ("yaml", "a:\n  - [b, c]\n", "a list directly inside a list"),
    ("yaml", "a:\n  - {name: b, colour: red}\n", "unknown key"),
    ("yaml", "a: 3\nb:\n", "must be a mapping or a list, not a number"),
    ("yaml", "a:\n", "has 1 leaf class"),
    ("yaml", "", "is empty"),
    ("yaml", "a: [b\n", "not valid YAML: line"),
    ("yaml", "a: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
    ("json", "{", "not valid JSON: line 1"),
    ("text", "a\n  b\n c\n", "line 3: the indentation of 'c' matches no enclosing level"),
    ("text", "a\n  b\n    c\n   d\n", "line 4"),
    ("text", "a\n\tb\n  c\n", "line 3: indentation mixes tabs and spaces"),
    ("text", "a\n    b\n  c\n", "line 3"),
    ("text", "> a description\na\nb\n", "line 1: a '>' description before any node"),
    ("text", "a\n  >\nb\n", "line 2: 'a' has an empty description"),
    ("text", "# only comments\n\n", "has no classes"),
    ("text", "a\nb | \n", "line 2: empty node name"),
])
def test_bad_trees_are_one_line_input_errors_naming_the_problem(kind, text, message):
    with pytest.raises(InputError, match=message) as caught:
        parse_tree(text, kind, source="taxonomy")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("taxonomy")


def test_size_depth_and_node_bounds(tmp_path, monkeypatch):
    deep = "".join("  " * i + f"n{i}\n" for i in range(tree_module.MAX_DEPTH + 2))
    with pytest.raises(InputError, match="nesting deeper than"):
        parse_tree(deep + "other\n", "text")
    nested: dict = {"leaf": None}
    for i in range(tree_module.MAX_DEPTH + 2):
        nested = {f"n{i}": nested, f"m{i}": None}
    with pytest.raises(InputError, match="nesting deeper than"):
        from_data(nested)
    with pytest.raises(InputError, match="nesting too deep"):
        parse_tree("[" * 100_000, "json")
    with pytest.raises(InputError, match="nesting too deep|not valid YAML"):
        parse_tree("[" * 100_000, "yaml")
    monkeypatch.setattr(tree_module, "MAX_NODES", 50)
    with pytest.raises(InputError, match="more than 50 nodes"):
        parse_tree("\n".join(f"n{i}" for i in range(51)), "text")
    # YAML aliases that would expand to a huge tree stop at the node budget, fast
    lines = ["l0: &l0 [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 8)]  # 10^8 leaves expanded
    started = time.perf_counter()
    with pytest.raises(InputError, match="more than 50 nodes|directly inside a list"):
        parse_tree("\n".join(lines) + "\n", "yaml")
    assert time.perf_counter() - started < 5
    monkeypatch.setattr(tree_module, "MAX_TREE_BYTES", 100)
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"class{i}" for i in range(50)))
    with pytest.raises(InputError, match="more than the 100 allowed"):
        read_tree(big)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_tree(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\nthé\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_tree(bad)


# --- properties --------------------------------------------------------------------------------
names = st.text(alphabet=string.ascii_letters + " -'é", min_size=1, max_size=12).map(str.strip).filter(bool)


@st.composite
def trees(draw, depth=3):
    """Random valid nested data: unique names, 2-4 children per internal node."""
    used: set[str] = set()

    def fresh() -> str:
        name = draw(names.filter(lambda n: n.casefold() not in used and "|" not in n))
        used.add(name.casefold())
        return name

    def level(d: int) -> dict:
        count = draw(st.integers(2, 4))
        return {fresh(): (level(d + 1) if d < depth and draw(st.booleans()) else None) for _ in range(count)}

    return level(1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300), st.sampled_from(["yaml", "json", "text"]))
def test_no_text_crashes_a_parser_with_anything_but_input_error(text, kind):
    try:
        tree = parse_tree(text, kind)
    except InputError as error:
        assert "\n" not in str(error)
        return
    assert len(tree.leaves) >= 2


structured = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(structured)
def test_no_nested_data_crashes_from_data_with_anything_but_input_error(data):
    with contextlib.suppress(InputError):
        from_data(data)


@settings(max_examples=60, deadline=None)
@given(trees())
def test_valid_trees_round_trip_through_every_format(data):
    tree = from_data(data)
    assert shape_of(parse_tree(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "yaml")) == shape_of(tree)
    assert shape_of(parse_tree(json.dumps(data), "json")) == shape_of(tree)
    assert shape_of(parse_tree(tree.to_text(), "text")) == shape_of(tree)
    assert shape_of(from_data(json.loads(json.dumps(tree.to_data())))) == shape_of(tree)


def test_descriptions_shared_by_yaml_aliases_count_as_expanded_and_are_refused_fast():
    import time

    from zsclip.hierarchy import tree as tree_module

    sentences = "".join(f"    - sentence number {i} about this thing\n" for i in range(1000))
    nodes = "".join(f"  - name: n{i}\n    descriptions: *many\n" for i in range(1, 30))
    text = f"shared:\n  - name: n0\n    descriptions: &many\n{sentences}{nodes}"
    assert len(text) < 60_000  # a small file ...
    start = time.perf_counter()
    with pytest.raises(InputError, match="description sentences"):  # ... that expands to 30,000 sentences
        parse_tree(text, "yaml")
    assert time.perf_counter() - start < 2.0
    fine = f"shared:\n  - name: n0\n    descriptions: &many\n{sentences}  - name: n1\n    descriptions: *many\n"
    parsed = parse_tree(fine, "yaml")
    assert [len(node.descriptions) for node in parsed.nodes[1:]] == [1000, 1000]
    assert tree_module.MAX_TREE_DESCRIPTIONS >= 2000
