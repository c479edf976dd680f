"""`digits-cnn`: a small CNN trained deterministically on scikit-learn's bundled digits.

8x8 grey images, 10 classes, 1797 samples, a fixed held-out test split. Training takes
tens of seconds on two cores and reaches ~98% test accuracy: enough headroom for INT8
builds to show a real accuracy gate. Heavy imports (torch, sklearn) stay inside functions
so scenario validation does not pay for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt

from harness.cache import cached_build, file_sha256, recipe_hash, source_of
from harness.config import StrictModel
from harness.models.base import ModelBundle


class DigitsCnnConfig(StrictModel):
    name: Literal["digits-cnn"]
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 64
    learning_rate: float = Field(2e-3, gt=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


def make_module(config: DigitsCnnConfig | None = None) -> Any:
    import torch
    from torch import nn

    class DigitsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))

    return DigitsNet()


def _split(config: DigitsCnnConfig) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=config.test_fraction, random_state=config.seed, stratify=y
    )
    return x_tr, x_te, y_tr, y_te


def _train(config: DigitsCnnConfig, out: Path) -> None:
    import torch

    x_tr, x_te, y_tr, y_te = _split(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-for-bit reproducible: no reduction-order races
    torch.manual_seed(config.seed)
    try:
        model = make_module(config)
        opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        loss_fn = torch.nn.CrossEntropyLoss()
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        gen = torch.Generator().manual_seed(config.seed)
        for _ in range(config.epochs):
            model.train()
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), config.batch_size):
                idx = order[i : i + config.batch_size]
                opt.zero_grad()
                loss_fn(model(xt[idx]), yt[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(x_te)).numpy()
    finally:
        torch.set_num_threads(threads)
    torch.save(model.state_dict(), out / "weights.pt")
    np.savez(
        out / "data.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, reference_test=ref
    )
    meta = {
        "model": "digits-cnn",
        "config": config.model_dump(),
        "test_accuracy": float((ref.argmax(1) == y_te).mean()),
        "weights_sha256": file_sha256(out / "weights.pt"),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


class DigitsCnn:
    name: ClassVar[str] = "digits-cnn"
    workload: ClassVar[str] = "tensor"
    config_class: ClassVar[type[StrictModel]] = DigitsCnnConfig

    def make_module(self, config: Any) -> Any:
        return make_module(config)

    def build(self, config: Any) -> ModelBundle:
        import sklearn
        import torch

        key = recipe_hash(
            config.model_dump(),
            source_of(sys.modules[__name__]),
            torch.__version__.split("+")[0],
            sklearn.__version__,
        )
        path = cached_build("models/digits-cnn", key, lambda out: _train(config, out))
        module = make_module(config)
        module.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        module.eval()
        data = np.load(path / "data.npz")
        return ModelBundle(
            name=self.name,
            key=key,
            path=path,
            module=module,
            x_train=data["x_train"],
            y_train=data["y_train"],
            x_test=data["x_test"],
            y_test=data["y_test"],
            reference_test=data["reference_test"],
            meta=json.loads((path / "meta.json").read_text()),
        )
