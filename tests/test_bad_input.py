"""Bad input gets one clear error (or a warning and a defined fallback), never a silent wrong answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import zsclip
from zsclip import InputError, ModelLoadError, ZeroShotClassifier, ZsclipWarning
from zsclip.prompts import resolve_templates


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def test_empty_class_list(tiny_clip):
    with pytest.raises(InputError, match="no class names") as error:
        ZeroShotClassifier.build(tiny_clip, [], "photo")
    _one_line(error)


@pytest.mark.parametrize("classes, name", [(["dog", "cat", "dog"], "dog"), (["Dog", " dog "], "dog"),
                                           ([["dog", "puppy"], "puppy"], "puppy")])
def test_duplicate_class_names(tiny_clip, classes, name):
    with pytest.raises(InputError, match="given twice") as error:
        ZeroShotClassifier.build(tiny_clip, classes, "photo")
    assert name in _one_line(error).lower()


def test_empty_class_name(tiny_clip):
    with pytest.raises(InputError, match="empty name"):
        ZeroShotClassifier.build(tiny_clip, ["dog", "  "], "photo")


@pytest.mark.parametrize("template, match", [("a photo of a dog.", "no {} placeholder"),
                                             ("a {} and a {}", "more than one"),
                                             ("a photo of a {name}", "only {} .the class name. is allowed"),
                                             ("a photo of a {:>999999999}", "only {} .the class name. is allowed"),
                                             ("a photo of a {0.__class__}", "only {} .the class name. is allowed"),
                                             ("a photo of a {", "not a valid template")])
def test_template_without_a_single_placeholder(tiny_clip, template, match):
    with pytest.raises(InputError, match=match) as error:
        ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], [template])
    assert template in _one_line(error)


def test_unknown_template_set_names_the_known_ones(tiny_clip):
    with pytest.raises(InputError, match="unknown template set 'openai-imagenet-80'") as error:
        ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "openai-imagenet-80")
    assert "openai-imagenet-7" in _one_line(error)


def test_template_sets_and_template_files(tmp_path):
    assert [len(resolve_templates(n)) for n in ("openai-imagenet", "openai-imagenet-7", "photo")] == [80, 7, 1]
    assert resolve_templates(None) == resolve_templates("openai-imagenet")
    path = tmp_path / "templates.txt"
    path.write_text("# my templates\na photo of a {}.\n\n  a drawing of a {}.  \n")
    assert [t.text for t in resolve_templates(path)] == ["a photo of a {}.", "a drawing of a {}."]
    path.write_text("a photo of a dog\n")
    with pytest.raises(InputError, match=f"in {path}"):
        resolve_templates(path)


def test_labels_file_with_synonyms(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# pets\ndog | puppy\ncat\n\n")
    assert zsclip.read_labels(path) == [["dog", "puppy"], ["cat"]]
    with pytest.raises(InputError, match="not found"):
        zsclip.read_labels(tmp_path / "missing.txt")


def test_overlong_prompt_warns_then_truncates_like_the_tokenizer(tiny_clip):
    long_name = " ".join(["enormous"] * 100)
    with pytest.warns(ZsclipWarning, match="exceed the text context of 77 tokens") as record:
        clf = ZeroShotClassifier.build(tiny_clip, [long_name, "cat"], ["a photo of a {}."], precision="fp32",
                                       cache=False)
    assert len([w for w in record if issubclass(w.category, ZsclipWarning)]) == 1
    reference = tiny_clip.model.encode_text(tiny_clip.tokenizer([f"a photo of a {long_name}."]), normalize=True)
    assert (clf.weights[:, 0] - reference[0].detach()).abs().max() <= 1e-5


def test_prompt_of_exactly_the_context_does_not_warn(tiny_clip, recwarn):
    name = " ".join(["dog"] * 70)  # <sot> a photo of a + 70 + . <eot> = 77 tokens
    assert int(tiny_clip.tokenize([f"a photo of a {name}."]).lengths[0]) == 77
    ZeroShotClassifier.build(tiny_clip, [name, "cat"], ["a photo of a {}."], cache=False)
    assert not [w for w in recwarn if issubclass(w.category, ZsclipWarning)]


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelLoadError, match="unknown open_clip model 'ViT-B-33'") as error:
        zsclip.load_model("ViT-B-33", pretrained="openai", device="cpu")
    assert "ViT-B-32" in _one_line(error)


def test_unknown_pretrained_tag_lists_the_known_tags():
    with pytest.raises(ModelLoadError, match="laion2b_s34b_b79k") as error:
        zsclip.load_model("ViT-B-32", pretrained="laion9b", device="cpu")
    assert "laion9b" in _one_line(error)


def test_missing_pretrained_is_an_error_not_random_weights():
    with pytest.raises(ModelLoadError, match="needs pretrained weights"):
        zsclip.load_model("ViT-B-32", device="cpu")


def test_local_dir_without_config_or_weights(tmp_path):
    with pytest.raises(ModelLoadError, match="no open_clip_config.json"):
        zsclip.load_model(f"local-dir:{tmp_path}", device="cpu")
    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {}}')
    with pytest.raises(ModelLoadError, match="no weights"):
        zsclip.load_model(f"local-dir:{tmp_path}", device="cpu")


def test_bad_device_and_precision(tiny_clip):
    with pytest.raises(InputError, match="unknown device"):
        zsclip.load_model("ViT-B-32", pretrained="random", device="gpu7")
    with pytest.raises(InputError, match="unknown precision 'fp64'"):
        ZeroShotClassifier.build(tiny_clip, ["dog", "cat"], "photo", precision="fp64")


@pytest.mark.slow
def test_unreachable_weights_give_one_line_naming_model_and_what_to_do(tmp_path):
    script = textwrap.dedent("""
        import zsclip
        try:
            zsclip.load_model("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
        except zsclip.ModelLoadError as error:
            print("MESSAGE:" + str(error))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("MESSAGE:")]
    assert "ViT-B-32" in line and "laion2b_s34b_b79k" in line
    assert "local-dir:" in line and "HF_HUB_OFFLINE" in line
    assert "Traceback" not in result.stderr and "ERROR:root" not in result.stderr


def test_local_dir_with_a_broken_config_names_the_folder_without_network_advice(tmp_path):
    (tmp_path / "open_clip_config.json").write_text("{}")
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="model_cfg") as error:
        zsclip.load_model(f"local-dir:{tmp_path}", device="cpu")
    assert str(tmp_path) in _one_line(error) and "network" not in str(error.value)


def test_bad_tree_descriptions_and_query_image_files_are_refused_before_any_model_loads(tmp_path):
    """The files a run reads besides its images are checked before the model: with a model that does not
    exist, the error still names the bad file (the model would have failed first otherwise)."""
    from click.testing import CliRunner

    from zsclip.cli import main

    examples = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
    (tmp_path / "dup.yaml").write_text("a:\n  b:\n  b:\n")
    (tmp_path / "bad.json").write_text('{"red circle": [["nested"]]}')
    (tmp_path / "query.png").write_bytes(b"not a png")
    labelled = tmp_path / "labelled" / "red_circle"
    labelled.mkdir(parents=True)
    shutil.copy(os.path.join(examples, "red_triangle.png"), labelled / "a.png")
    runs = [
        ("dup.yaml", ["classify", examples, "--labels-tree", str(tmp_path / "dup.yaml")]),
        ("bad.json", ["classify", examples, "--labels", "red circle,blue star", "--descriptions",
                      str(tmp_path / "bad.json")]),
        ("query.png", ["search", examples, "--image", str(tmp_path / "query.png")]),
        ("dup.yaml", ["eval", "--data", str(labelled.parent), "--labels-tree", str(tmp_path / "dup.yaml")]),
        ("bad.json", ["eval", "--data", str(labelled.parent), "--descriptions", str(tmp_path / "bad.json")]),
    ]
    for name, command in runs:
        result = CliRunner().invoke(main, [*command, "--model", "no-such-model"])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and name in lines[0], (command, result.output)
        assert "no-such-model" not in lines[0]
