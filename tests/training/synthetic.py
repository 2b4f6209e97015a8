"""A tiny, easily learned image task staged the way staging writes it (PNGs, .lst files, dataset.json)."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

CLASSES = ("reddish", "bluish")


def images(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 is reddish, class 1 bluish, both with noisy texture: learned in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.integers(0, 120, size=(n, size, size, 3))
    x[labels == 0, :, :, 0] += 120
    x[labels == 1, :, :, 2] += 120
    return x.astype(np.uint8), labels.astype(np.int64)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def stage(backend, n_train: int = 64, n_test: int = 32, size: int = 16) -> dict[str, object]:
    """Write train/ and test/ PNGs, train.lst, test.lst and dataset.json into the backend's bucket."""
    bucket = backend.objects.bucket
    items: dict[str, bytes] = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        x, y = images(n, size, seed)
        lines = []
        for i, (im, label) in enumerate(zip(x, y)):
            name = f"img_{split}_{i:04d}.png"
            items[f"{split}/{name}"] = png(im)
            lines.append(f"{i}\t{label}\t{name}\n")
        items[f"{split}.lst"] = "".join(lines).encode()
    items["dataset.json"] = json.dumps({"classes": list(CLASSES)}).encode()
    backend.store.put_many(bucket, items)
    return {"bucket": bucket, "n_train": n_train, "n_test": n_test, "size": size}


def hyperparameters(n_train: int = 64, size: int = 16, epochs: int = 2, **extra: str) -> dict[str, str]:
    hp = {
        "num_classes": "2", "num_training_samples": str(n_train), "image_shape": f"3,{size},{size}",
        "num_layers": "20", "epochs": str(epochs), "mini_batch_size": "16", "optimizer": "adam",
        "learning_rate": "0.01", "precision_dtype": "float32",
    }
    hp.update({k: str(v) for k, v in extra.items()})
    return hp
