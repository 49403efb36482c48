"""Training crops whose order and augmentation are a pure function of (seed, position).

Sample number ``p`` of a run is always the same crop of the same photo, whichever
worker makes it and whether or not the run was interrupted: resuming at step
``s`` only means starting at position ``s * batch_size``.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from stylize.errors import StylizeError
from stylize.images import find_images, load_image

# Crops cover this fraction of the photo's area (then resized to image_size),
# with aspect ratios between 3:4 and 4:3, as in torchvision's RandomResizedCrop.
CROP_AREA = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)

Sample = tuple[torch.Tensor, tuple[str, ...]]


def _generator(*numbers: int) -> torch.Generator:
    seed = 0
    for number in numbers:
        seed = (seed * 6364136223846793005 + number + 1442695040888963407) % 2**63
    return torch.Generator().manual_seed(seed)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random area- and ratio-bounded crop."""
    for _ in range(10):
        area = height * width * _uniform(generator, *CROP_AREA)
        ratio = math.exp(_uniform(generator, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        crop_w, crop_h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
            return top, left, crop_h, crop_w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


class RandomCrops(Dataset[Sample]):
    """Indexed by position in the run; returns (3xSxS crop, unreadable files met)."""

    def __init__(self, files: Sequence[Path], image_size: int, seed: int):
        self.files = list(files)
        self.image_size = image_size
        self.seed = seed
        self._unreadable: set[int] = set()
        self._order_epoch = -1
        self._order = torch.empty(0, dtype=torch.long)

    def _file_order(self, epoch: int) -> torch.Tensor:
        if epoch != self._order_epoch:
            self._order = torch.randperm(len(self.files), generator=_generator(self.seed, epoch))
            self._order_epoch = epoch
        return self._order

    def __getitem__(self, position: int) -> Sample:
        count = len(self.files)
        order = self._file_order(position // count)
        met: list[str] = []
        # An unreadable photo is replaced by the next one in this epoch's order.
        for offset in range(count):
            index = int(order[(position + offset) % count])
            if index in self._unreadable:
                continue
            try:
                image = load_image(self.files[index]).rgb
            except StylizeError:
                self._unreadable.add(index)
                met.append(str(self.files[index]))
                continue
            return self._augment(image, _generator(self.seed, position, 1)), tuple(met)
        raise StylizeError(f"none of the {count} training images could be read")

    def _augment(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        top, left, crop_h, crop_w = crop_box(image.shape[-2], image.shape[-1], generator)
        crop = image[..., top : top + crop_h, left : left + crop_w]
        size = (self.image_size, self.image_size)
        crop = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
        if torch.rand((), generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        return crop[0].clamp(0, 1)


def collate(samples: list[Sample]) -> Sample:
    images = torch.stack([image for image, _ in samples])
    met = tuple(path for _, paths in samples for path in paths)
    return images, met


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it finishes the step and checkpoints).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def training_files(folder: Path) -> list[Path]:
    """The images below ``folder``, once at least one of them is known to decode:
    a folder of unreadable files (Git LFS pointers named .jpg, say) fails here,
    in one line, before any file is written or loader process started."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StylizeError(f"training data folder not found: {folder}")
    files = find_images(folder)
    if not files:
        raise StylizeError(f"no images (jpg, png, webp, bmp, tif) in {folder} or its sub-folders")
    first_problem = None
    for path in files:
        try:
            load_image(path)
            return files
        except StylizeError as error:
            first_problem = first_problem or str(error)
    raise StylizeError(f"none of the {len(files)} images in {folder} can be read (the first: {first_problem})")


def batches(loader: DataLoader[Sample]) -> Iterator[Sample]:
    """The loader's batches. A ``StylizeError`` in a loader process reaches the
    main one as torch's text of the whole traceback; it comes out as its own line."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except StylizeError as error:
            raise StylizeError(_message_inside(str(error))) from None
        yield batch


def _message_inside(text: str) -> str:
    """``Caught StylizeError in DataLoader worker ... stylize.errors.StylizeError: MESSAGE`` -> MESSAGE."""
    marker = f"{StylizeError.__name__}: "
    return text.rstrip().rpartition(marker)[2] if text.startswith("Caught ") and marker in text else text


def crop_loader(
    files: Sequence[Path],
    image_size: int,
    batch_size: int,
    seed: int,
    start_step: int,
    steps: int,
    workers: int,
    pin_memory: bool,
    rank: int = 0,
    processes: int = 1,
) -> DataLoader[Sample]:
    """This process's batches for steps ``start_step + 1 .. steps``, in the run's fixed order.

    Step ``s`` uses positions ``s*G .. s*G+G-1`` with G = ``batch_size * processes``;
    the DistributedSampler deals them out in turn, so process ``r`` gets
    ``s*G + r``, ``s*G + r + processes``, ... The steps' photos are the same for
    any split of G, which is why N processes match one process of batch G.
    """
    per_step = batch_size * processes
    positions = Subset(RandomCrops(files, image_size, seed), range(start_step * per_step, steps * per_step))
    return DataLoader(
        positions,
        batch_size=batch_size,
        sampler=DistributedSampler(positions, num_replicas=processes, rank=rank, shuffle=False),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_interrupts if workers else None,
    )
