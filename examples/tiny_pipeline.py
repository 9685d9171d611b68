"""Build a tiny Stable Diffusion pipeline with random weights and save it with
`save_pretrained`, so that `examples/tiny_diffusion.py` loads it through diffusers' real
`from_pretrained` with no download. Its images are noise, made by the real pipeline code.

    python examples/tiny_pipeline.py --user USER   # into USER's area of the model cache
    python examples/tiny_pipeline.py FOLDER
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def default_folder(user: str) -> Path:
    """Where USER's runners find it, as /data/tiny-sd: USER's area of the node's model cache,
    $TENANTSERVE_MODEL_CACHE/users/USER (the cache defaults to $TENANTSERVE_HOME/cache,
    itself ~/.tenantserve by default)."""
    home = Path(os.environ.get("TENANTSERVE_HOME", "~/.tenantserve")).expanduser()
    return Path(os.environ.get("TENANTSERVE_MODEL_CACHE") or home / "cache") / "users" / user / "tiny-sd"


def _byte_level_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    """A CLIP tokenizer whose vocabulary is single bytes (no merges): every prompt tokenizes."""
    from transformers import CLIPTokenizer

    # GPT-2/CLIP byte-level BPE spells each byte as one printable character.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    symbols = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    return tokenizer, len(vocab)


def build(folder: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, vocab_size = _byte_level_tokenizer(Path(scratch))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=64,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              steps_offset=1)
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--user":
        target = default_folder(sys.argv[2])
    elif len(sys.argv) == 2 and not sys.argv[1].startswith("-"):
        target = Path(sys.argv[1])
    else:
        sys.exit(__doc__)
    print(f"tiny pipeline saved in {build(target)}")
