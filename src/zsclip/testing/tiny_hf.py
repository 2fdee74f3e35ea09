"""Tiny random transformers CLIP and SigLIP checkpoints, built and saved without any network.

The hub is unreachable in tests, so each helper writes a ``save_pretrained`` directory (model +
processor) that ``AutoModel`` / ``AutoProcessor`` load offline. The models are random and tiny
(hidden 32, 2 layers, 32 px images) but keep the real architectures' text handling: CLIP's 77-token
causal tower with OpenAI's BPE vocabulary, SigLIP's 64-token bidirectional tower that pools the
last position and is fed without an attention mask.
"""

from __future__ import annotations

import gzip
import math
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

IMAGE_SIZE = 32
_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


# --- CLIP -------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which CLIP's BPE vocabulary is written in."""
    ranges = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
    printable = [code for first, last in ranges for code in range(ord(first), ord(last) + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """OpenAI CLIP's 49408-token vocabulary and merges, from the BPE file open_clip ships."""
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    tokens = list(_bytes_to_unicode().values())
    tokens += [token + "</w>" for token in tokens]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer() -> CLIPTokenizer:
    """The OpenAI CLIP tokenizer (pad = end-of-text, 77 tokens), built from local files."""
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def vit_b32_shaped_clip(seed: int = 0) -> tuple[CLIPModel, CLIPTokenizer]:
    """A random transformers CLIPModel of ViT-B/32's shape (CLIPConfig defaults) and its tokenizer,
    for benchmarks: speed does not depend on the weights, and no hub is needed."""
    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    config = CLIPConfig(text_config={"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id})
    return CLIPModel(config).eval(), tokenizer


def save_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """Write a random tiny CLIPModel + CLIPProcessor to ``directory`` and return it."""
    tokenizer = clip_tokenizer()
    text = dict(_TOWER, vocab_size=len(tokenizer), max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(_TOWER, image_size=IMAGE_SIZE, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return _save(directory, model, CLIPProcessor(image_processor=images, tokenizer=tokenizer))


# --- SigLIP -----------------------------------------------------------------------------------
def siglip_tokenizer() -> PreTrainedTokenizerFast:
    """A SigLIP-like tokenizer without sentencepiece: lowercasing unigram over characters and
    a few words, ``</s>`` appended and used as padding, 64 tokens, input ids only."""
    specials = ["<pad>", "</s>", "<unk>"]
    words = ["▁a", "▁photo", "▁of", "▁the", "▁cat", "▁dog", "▁bird", "▁car", "▁this", "▁is"]
    chars = ["▁", *"abcdefghijklmnopqrstuvwxyz0123456789.,'-!?"]
    pieces = [(s, 0.0) for s in specials] + [(w, -2.0) for w in words]
    pieces += [(c, -5.0 - math.log(1 + i)) for i, c in enumerate(chars)]
    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="</s>", unk_token="<unk>",
        model_max_length=64, model_input_names=["input_ids"],
    )


def save_tiny_siglip(directory: str | Path, seed: int = 0) -> Path:
    """Write a random tiny SiglipModel + SiglipProcessor to ``directory`` and return it.

    SigLIP initialises logit scale and bias to zero; they are set to realistic values here so
    that tests comparing them mean something.
    """
    tokenizer = siglip_tokenizer()
    text = dict(_TOWER, vocab_size=len(tokenizer), max_position_embeddings=64,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    vision = dict(_TOWER, image_size=IMAGE_SIZE, patch_size=8)
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0) + 0.1 * seed)
        model.logit_bias.fill_(-10.0 + seed)
    images = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return _save(directory, model, SiglipProcessor(image_processor=images, tokenizer=tokenizer))


def _save(directory: str | Path, model: torch.nn.Module, processor) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
