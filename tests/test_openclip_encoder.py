"""The open_clip adapter: loading through local-dir:, feature contract, exact padding truncation."""

from __future__ import annotations

import copy
import hashlib
import struct
from pathlib import Path

import torch
import torch.nn.functional as F

import zsclip
from zsclip.encoders.openclip import _encode_text_cut

PROMPTS = ["a photo of a dog.", "itap of a cat.", "a low resolution photo of the great white shark in a video game.",
           "x", "a sculpture of a hammerhead shark, with an unusually long prompt that goes on and on."]


def test_local_dir_model_loads_with_feature_contract(tiny_clip):
    text = tiny_clip.encode_text(PROMPTS, precision="fp32")
    pixels = torch.stack([tiny_clip.preprocess(img) for img in _images(3)])
    image = tiny_clip.encode_images(pixels, precision="fp32")
    assert text.dtype == image.dtype == torch.float32
    assert text.shape == (len(PROMPTS), tiny_clip.embed_dim) and image.shape == (3, tiny_clip.embed_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(len(PROMPTS)), atol=1e-5)
    assert torch.allclose(image.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert abs(tiny_clip.logit_scale - 100.0) < 1e-3 and tiny_clip.logit_bias is None


def test_text_features_equal_open_clip_encode_text(tiny_clip):
    ours = tiny_clip.encode_text(PROMPTS, precision="fp32")
    with torch.no_grad():
        reference = tiny_clip.model.encode_text(tiny_clip.tokenizer(PROMPTS), normalize=True)
    assert (ours - reference).abs().max() <= 1e-5


def test_image_features_equal_open_clip_encode_image(tiny_clip):
    pixels = torch.stack([tiny_clip.preprocess(img) for img in _images(4)])
    with torch.no_grad():
        reference = tiny_clip.model.encode_image(pixels, normalize=True)
    assert (tiny_clip.encode_images(pixels, precision="fp32") - reference).abs().max() <= 1e-5


def test_causal_tower_runs_only_the_positions_it_needs(tiny_clip, monkeypatch):
    assert tiny_clip.truncates_padding, tiny_clip.truncation_blocker
    monkeypatch.setattr(tiny_clip, "shares_prefixes", False)  # the plain truncated path
    widths = []
    forward = tiny_clip._text_forward
    monkeypatch.setattr(tiny_clip, "_text_forward",
                        lambda tokens: widths.append(tokens.ids.shape[1]) or forward(tokens))
    tiny_clip.encode_text(["a dog.", "a photo of a cat."], batch_size=1, precision="fp32")
    assert widths == [5, 8]  # <sot> a dog . <eot>  and  <sot> a photo of a cat . <eot>, not 77


def test_truncation_is_exact_on_causal_tower(tiny_clip):
    ids = tiny_clip.tokenize(PROMPTS).ids
    cut = int(ids.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        full = tiny_clip.model.encode_text(ids)
        truncated = _encode_text_cut(tiny_clip.tower, ids[:, :cut])
    assert cut < ids.shape[1]
    assert (F.normalize(full, dim=-1) - F.normalize(truncated, dim=-1)).abs().max() <= 1e-5


def test_bidirectional_tower_is_never_truncated_because_it_would_change_the_output(tiny_bidir):
    assert not tiny_bidir.truncates_padding
    assert "bidirectional" in tiny_bidir.truncation_blocker
    ids = tiny_bidir.tokenize(PROMPTS).ids
    cut = int(ids.argmax(dim=-1).max()) + 1
    with torch.no_grad():
        full = F.normalize(tiny_bidir.model.encode_text(ids), dim=-1)
        truncated = F.normalize(_encode_text_cut(tiny_bidir.tower, ids[:, :cut]), dim=-1)
    # what truncation would do to this tower: a different vector
    assert (full - truncated).abs().max() > 1e-3
    # what zsclip does: the reference vector
    assert (tiny_bidir.encode_text(PROMPTS, precision="fp32") - full).abs().max() <= 1e-5


def test_duplicate_prompts_are_encoded_once(tiny_clip, monkeypatch):
    seen = []
    tokenize = tiny_clip.tokenize
    monkeypatch.setattr(tiny_clip, "tokenize", lambda texts: seen.extend(texts) or tokenize(texts))
    features = tiny_clip.encode_text(["a dog.", "a cat.", "a dog."], precision="fp32")
    assert seen == ["a dog.", "a cat."]
    assert torch.equal(features[0], features[2]) and not torch.equal(features[0], features[1])


def test_fingerprint_is_stable_and_tracks_weights(tiny_clip, tiny_clip_dir, tiny_clip_other_dir):
    again = zsclip.load_model(tiny_clip_dir, device="cpu")
    other = zsclip.load_model(tiny_clip_other_dir, device="cpu")
    assert tiny_clip.fingerprint == again.fingerprint
    assert tiny_clip.fingerprint != other.fingerprint


def test_wrap_accepts_an_open_clip_model_and_tokenizer(tiny_clip):
    wrapped = zsclip.wrap(tiny_clip.model, tiny_clip.tokenizer, tiny_clip._preprocess)
    assert torch.equal(wrapped.encode_text(PROMPTS, precision="fp32"), tiny_clip.encode_text(PROMPTS, precision="fp32"))
    assert wrapped.fingerprint == tiny_clip.fingerprint


def _images(n: int):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(40, 48, 3, generator=generator) * 255).byte().numpy()) for _ in range(n)]


def _record_suffix_batches(monkeypatch) -> list[tuple[list[int], int]]:
    """(groups, positions run) of every batch the shared-prefix path encodes."""
    from zsclip.encoders import shared_prefix

    batches = []
    encode = shared_prefix.encode_suffixes

    def recording(tower, ids, pooled, groups, cache):
        batches.append((groups.tolist(), int((pooled + 1 - cache.lengths[groups]).max())))
        return encode(tower, ids, pooled, groups, cache)

    monkeypatch.setattr(shared_prefix, "encode_suffixes", recording)
    return batches


def test_shared_prefix_runs_only_each_prompts_own_tokens_and_gives_the_reference(tiny_clip, monkeypatch):
    assert tiny_clip.shares_prefixes
    batches = _record_suffix_batches(monkeypatch)
    names = ["dog", "great white shark", "cat", "hammerhead shark with a very long name"]
    prompts = [f"a low resolution photo of the {n}." for n in names] + [f"itap of a {n}." for n in names]
    ours = tiny_clip.encode_text(prompts, groups=[0] * 4 + [1] * 4, precision="fp32")
    with torch.no_grad():
        reference = tiny_clip.model.encode_text(tiny_clip.tokenizer(prompts), normalize=True)
    assert (ours - reference).abs().max() <= 1e-5
    # prefixes "<sot> a low resolution photo of the" (7) and "<sot> it ap of a" (5) are not rerun:
    # the widest row left is "hammerhead shark with a very long name . <eot>" of the longest prompt
    full = int(tiny_clip.tokenize(prompts).lengths.max())
    assert max(width for _, width in batches) == full - 7 == 10


def test_batches_are_tight_by_own_length_across_templates(tiny_clip, monkeypatch):
    batches = _record_suffix_batches(monkeypatch)
    prompts = ["a photo of a dog.", "itap of a dog.", "a photo of a great white shark.", "itap of a great white shark."]
    tiny_clip.encode_text(prompts, batch_size=2, groups=[0, 1, 0, 1], precision="fp32")
    # "dog . <eot>" is 3 positions in both templates; "great white shark . <eot>" is 5
    assert batches == [([0, 1], 3), ([0, 1], 5)]


def test_common_prefix_leaves_every_row_its_end_of_text_token():
    from zsclip.encoders.shared_prefix import common_prefix_length

    ids = torch.tensor([[1, 5, 6, 7, 9], [1, 5, 6, 8, 9], [1, 5, 6, 7, 9]])
    assert common_prefix_length(ids, torch.tensor([5, 5, 5])) == 3
    assert common_prefix_length(ids[[0, 2]], torch.tensor([5, 5])) == 4  # identical rows keep one own token
    assert common_prefix_length(ids, torch.tensor([5, 3, 5])) == 2


def test_bidirectional_tower_does_not_share_prefixes(tiny_bidir):
    assert not tiny_bidir.shares_prefixes


def test_named_architecture_with_a_checkpoint_file(tiny_clip, tiny_clip_dir, tmp_path):
    """``load_model(NAME, pretrained=FILE)``: a registered open_clip config plus a weights file."""
    import json
    import shutil

    import open_clip

    folder = Path(tiny_clip_dir.removeprefix("local-dir:"))
    config = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "zsclip-test-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "zsclip-test-tiny.json")
    weights = tmp_path / "weights.safetensors"
    shutil.copy(folder / "open_clip_model.safetensors", weights)
    encoder = zsclip.load_model("zsclip-test-tiny", pretrained=str(weights), device="cpu")
    assert encoder.fingerprint == tiny_clip.fingerprint
    assert torch.equal(encoder.encode_text(PROMPTS, precision="fp32"), tiny_clip.encode_text(PROMPTS, precision="fp32"))


def test_weight_digest_sees_one_changed_value_a_rename_and_bf16_bytes():
    from zsclip.encoders.fingerprint import state_dict_digest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    base = state_dict_digest(model)
    assert state_dict_digest(copy.deepcopy(model)) == base
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[0].weight[2, 1] += 1e-6
    assert state_dict_digest(changed) != base
    renamed = torch.nn.Sequential(torch.nn.Identity(), *copy.deepcopy(model))  # same tensors, other names
    assert state_dict_digest(renamed) != base
    half = copy.deepcopy(model).to(torch.bfloat16)
    nudged = copy.deepcopy(half)
    with torch.no_grad():
        nudged[1].bias[0] += 0.5
    assert state_dict_digest(half) != state_dict_digest(nudged)  # bf16 bytes are hashed, not just its name


def test_weight_digest_is_pinned_and_takes_every_dtype():
    """A fixed module has a fixed digest: a change of recipe must bump FINGERPRINT_VERSION."""
    from zsclip.encoders.fingerprint import state_dict_digest

    class Buffers(torch.nn.Module):
        def __init__(self, **tensors):
            super().__init__()
            for name, tensor in tensors.items():
                self.register_buffer(name, tensor)

    fixed = Buffers(a=torch.arange(6, dtype=torch.float32).reshape(2, 3), b=torch.tensor([True, False]))
    a_bytes = struct.pack("<6f", 0, 1, 2, 3, 4, 5)  # little-endian float32, row-major
    recipe = (f"a:(2, 3):torch.float32:{hashlib.sha256(a_bytes).hexdigest()}\n"
              f"b:(2,):torch.bool:{hashlib.sha256(bytes([1, 0])).hexdigest()}\n")
    assert state_dict_digest(fixed) == hashlib.sha256(recipe.encode()).hexdigest()[:32]
    def odd() -> Buffers:
        return Buffers(scalar=torch.tensor(3.5), empty=torch.zeros(0, 4), big=torch.arange(4, dtype=torch.int64),
                       f8=torch.ones(3).to(torch.float8_e4m3fn), c=torch.ones(2, dtype=torch.complex64).conj(),
                       q=torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8), t=torch.ones(3, 2).T)

    digest = state_dict_digest(odd())
    assert digest == state_dict_digest(odd()) and len(digest) == 32
    other_scale = odd()
    other_scale.q = torch.quantize_per_tensor(torch.ones(3), 0.2, 0, torch.qint8)
    assert state_dict_digest(other_scale) != digest  # same int8 values, other scale: other weights
