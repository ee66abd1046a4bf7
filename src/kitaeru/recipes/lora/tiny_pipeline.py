"""A tiny random-init Stable Diffusion pipeline folder, written offline (for demos and tests).

The components are sized as diffusers' own tests size them (a two-block UNet with cross-attention,
a small CLIP text model), so a training step takes milliseconds on a CPU; the VAE has four tiny
blocks so that it downsamples 8x like the real one (latent = image / 8), which keeps generation at
real plan sizes fast. The
tokenizer is the real CLIP BPE tokenizer, built from the vocabulary file that ships inside the
open_clip_torch wheel (``bpe_simple_vocab_16e6.txt.gz``): it tokenises exactly like CLIP, with no
download. Such a pipeline generates noise-like pictures, never real floor plans: it exercises the
code paths, not the result. Real results need a real Stable Diffusion base.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

# The numbers of CLIP's BPE: 49,152 - 256 - 2 merges, then 256 byte symbols, their word-final forms,
# the merges and the two special tokens = 49,408 ids.
N_MERGES = 49152 - 256 - 2
START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocabulary_file() -> Path:
    """The BPE vocabulary inside the open_clip_torch wheel."""
    from kitaeru.core.errors import require

    open_clip = require("open_clip", "all", "the offline CLIP tokenizer")
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        from kitaeru.core.errors import DataError

        raise DataError(f"{path}: CLIP's BPE vocabulary is missing from the open_clip_torch install")
    return path


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` of the CLIP tokenizer, from open_clip's BPE file."""
    lines = gzip.open(clip_vocabulary_file(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:N_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START_TOKEN, END_TOKEN]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def clip_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_tokenizer_files(workdir)
    return CLIPTokenizer(str(vocab_file), str(merges_file), pad_token=END_TOKEN, model_max_length=77)


def build_tiny_pipeline(seed: int = 0, workdir: Path | None = None):
    """The tiny pipeline object (random weights from ``seed``)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2,
    )
    # Four blocks, three of them downsampling: latents 8x smaller than the image, as in real SD, so a
    # plan of 800x640 px is a 100x80 latent (with 2x it was 400x320 and generation took minutes).
    vae = AutoencoderKL(
        block_out_channels=(4, 8, 8, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2, vocab_size=49408,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, projection_dim=8,
    ))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    with tempfile.TemporaryDirectory(prefix="kitaeru-clip-bpe-") as tmp:
        tokenizer = clip_tokenizer(Path(workdir or tmp))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def write_tiny_pipeline(out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny pipeline to ``out`` (a diffusers folder ``from_pretrained`` reads); atomic."""
    from kitaeru.core.storage import check_output_path

    out = Path(out)
    check_output_path(out, setting="--out", kind="dir")  # a file on the way: one line, before torch loads
    out.parent.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").write_text(
            "A tiny random-init Stable Diffusion pipeline written by kitaeru for offline tests and demos.\n"
            "It generates no real images; use a real Stable Diffusion base for real results.\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
