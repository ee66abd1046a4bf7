"""Build data for docclass: the template pool (a user folder or generated templates), the class
scheme, the training stream of synthetic photos and the held-out validation draws."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kitaeru.core.console import info
from kitaeru.recipes.docclass.documents import (
    AugmentedDocuments,
    DocumentAugment,
    Orientation,
    TemplatePool,
    orientation_name,
    orientations,
    read_template_pool,
)

from .config import DocclassConfig

# Validation draws use seeds far above any training-stream seed, so they are never trained on.
VALIDATION_SEED_OFFSET = 10**12


@dataclass
class DocclassData:
    pool: TemplatePool
    orientations: list[Orientation]
    train: AugmentedDocuments
    val: AugmentedDocuments

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def meta(self) -> dict:
        """What a checkpoint must remember about the classes it was trained on."""
        return {
            "templates": list(self.pool.labels),
            "orientations": [orientation_name(o) for o in self.orientations],
            "num_classes": self.num_classes,
        }


def build_augment(config: DocclassConfig, image_size: int | None = None) -> DocumentAugment:
    # The augment section and DocumentAugment share their parameter names one to one.
    return DocumentAugment(image_size or config.data.image_size, **config.augment.model_dump())


def resolve_pool_dir(config: DocclassConfig, run_dir: Path) -> str:
    """``data.data_dir``, or a folder of generated sample templates inside the run folder."""
    if config.data.data_dir:
        return config.data.data_dir
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    target = run_dir / "sample_templates"
    if not (target.is_dir() and any(target.glob("*.png"))):
        generate_documents(target, config.data.sample_templates, seed=config.train.seed)
        info(f"no --data-dir: generated {config.data.sample_templates} sample templates in {target}")
    return str(target)


def build_data(config: DocclassConfig, run_dir: Path) -> DocclassData:
    """Read the pool and build the training stream and the fixed validation draws."""
    pool = read_template_pool(resolve_pool_dir(config, run_dir), max_side=config.data.template_side)
    classes = orientations(config.data.rotations, config.data.flips)
    pairs = len(config.data.rotations) * len(config.data.flips)
    info(
        f"{len(pool)} template(s) × {len(classes)} orientation classes = {len(pool) * len(classes)} classes"
        + (f" ({pairs} rotation×flip pairs, identical pictures merged)" if pairs != len(classes) else "")
        + (f"; skipped {len(pool.skipped)} unreadable image(s)" if pool.skipped else "")
    )
    augment = build_augment(config)
    train = AugmentedDocuments(pool.images, classes, config.data.train_samples_per_class, augment)
    val = AugmentedDocuments(
        pool.images,
        classes,
        config.data.val_samples_per_class,
        augment,
        draw_seed=VALIDATION_SEED_OFFSET + config.train.seed * 10**6,
    )
    return DocclassData(pool=pool, orientations=classes, train=train, val=val)


def make_loaders(data: DocclassData, batch: int, workers: int, *, pin_memory: bool = False, seed: int = 0):
    """Training (shuffled) and validation loaders; workers persist across epochs."""
    import torch
    from torch.utils.data import DataLoader

    common = {"batch_size": batch, "num_workers": workers, "pin_memory": pin_memory, "persistent_workers": workers > 0}
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(data.train, shuffle=True, drop_last=len(data.train) > batch, generator=generator, **common)
    val = DataLoader(data.val, shuffle=False, **common)
    return train, val
