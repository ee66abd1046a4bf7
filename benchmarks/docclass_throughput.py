"""Document classification throughput: the plain way vs kitaeru's ``docclass classify`` path.

Plain: every photo fully decoded with PIL, torchvision transforms, one PyTorch forward per photo
(``torch.no_grad``), cosine against the bank. kitaeru: JPEGs decoded at reduced size (PIL draft) in
parallel threads, NumPy preprocessing, batched onnxruntime on the exported inference branch (the path that runs
without PyTorch). Both use the guide's network (lcnet_050 + head, random weights: throughput does not
depend on training) on generated document photos saved as large JPEGs.

    python benchmarks/docclass_throughput.py [--photos 120] [--templates 10] [--image-size 96] [--side 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(folder: Path, templates: int, photos: int, side: int) -> tuple[Path, Path]:
    from kitaeru.recipes.docclass.documents import DocumentAugment, augmented_photo
    from kitaeru.recipes.docclass.sample_documents import generate_documents, render_document

    bank_dir, photo_dir = folder / "templates", folder / "photos"
    generate_documents(bank_dir, templates, seed=1)
    photo_dir.mkdir(parents=True)
    augment = DocumentAugment(512, perspective=0.1, margin=0.05)
    kinds = ("id_card", "passport", "receipt", "form", "letter")
    for i in range(photos):
        doc = render_document(kinds[i % templates % len(kinds)], 1 * 100_003 + i % templates)
        # A phone photo: large, JPEG-compressed.
        augmented_photo(doc, augment, seed=i).resize((side, side)).save(photo_dir / f"photo_{i:04d}.jpg", quality=90)
    return bank_dir, photo_dir


def calibrate_batchnorm(net, folder: Path, image_size: int) -> None:
    """Random weights with fresh BatchNorm statistics give near-identical features for every input;
    measuring the statistics on the templates makes the features (and the agreement check) meaningful."""
    import torch

    from kitaeru.recipes.docclass.documents import preprocess_images, read_template_pool

    batch = torch.from_numpy(preprocess_images(read_template_pool(folder, max_side=256).images, image_size))
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration passes
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(batch)
    net.eval()


def plain_classify(net, bank_feats: np.ndarray, paths: list[Path], image_size: int) -> tuple[np.ndarray, float]:
    import torch
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    start = time.perf_counter()
    feats = []
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            feat = net(transform(image).unsqueeze(0))[0].numpy()
            int(np.argmax(bank_feats @ feat))
            feats.append(feat)
    return np.stack(feats), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--templates", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--side", type=int, default=2000, help="Side of the photo JPEGs in pixels.")
    args = parser.parse_args()

    import torch

    from kitaeru.core.config import load_config
    from kitaeru.export.onnx import export_onnx
    from kitaeru.recipes.docclass.bank import classify_images, embed_files, load_bank, register_templates
    from kitaeru.recipes.docclass.config import DocclassConfig
    from kitaeru.recipes.docclass.inference import load_feature_model, sidecar_path
    from kitaeru.recipes.docclass.module import create_network

    torch.manual_seed(0)
    config = load_config(DocclassConfig, "docclass", cfg_name="lcnet050_cosface_96").with_image_size(args.image_size)
    net = create_network(config, pretrained="none").eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bank_dir, photo_dir = make_photos(folder, args.templates, args.photos, args.side)
        calibrate_batchnorm(net, bank_dir, args.image_size)
        onnx_path = folder / "model.onnx"
        export_onnx(net, config.onnx, onnx_path)
        sidecar_path(onnx_path).write_text(f'{{"image_size": {args.image_size}, "embedding_dim": 128, "unknown_threshold": 0.0}}')
        model = load_feature_model(onnx_path)
        register_templates(model, bank_dir, folder / "bank.npz")
        bank = load_bank(folder / "bank.npz")
        paths = sorted(photo_dir.glob("*.jpg"))

        plain_feats, plain_seconds = plain_classify(net, bank.features, paths, args.image_size)
        start = time.perf_counter()
        classify_images(model, bank, [str(photo_dir)])
        ours_seconds = time.perf_counter() - start
        # Outside the timing: the features kitaeru's path computed, to show both paths agree.
        ours_feats = embed_files(model, [str(p) for p in paths])

    cosine = np.sum(plain_feats * ours_feats, axis=1)
    print(f"photos: {len(paths)} JPEGs of {args.side}x{args.side}, bank: {len(bank.labels)} templates, input {args.image_size}px")
    print(f"plain  (PIL full decode + torchvision + eager PyTorch, one by one): {plain_seconds:.2f} s, {len(paths) / plain_seconds:.1f} photos/s")
    print(f"kitaeru (threaded draft decode + NumPy + batched onnxruntime):      {ours_seconds:.2f} s, {len(paths) / ours_seconds:.1f} photos/s")
    print(f"feature cosine plain vs kitaeru (decode/resize differ): mean {cosine.mean():.4f}, min {cosine.min():.4f}")
    print(f"speed-up kitaeru/plain: {plain_seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
