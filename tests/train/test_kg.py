"""End to end: TransE embeddings of a small knowledge graph learned from its facts through Trainer."""

from __future__ import annotations

import numpy as np
import torch

from tensorlogic.train import Trainer

N, DIM, MARGIN, NEG = 16, 32, 1.0, 8
# 30 facts: a chain 0 -> 1 -> ... -> 15 under `next` and its inverse `prev` (TransE can fit it exactly:
# e_i = e_0 + i * r_next, r_prev = -r_next), so link prediction on it has a known good answer
FACTS = [(i, 0, i + 1) for i in range(N - 1)] + [(i + 1, 1, i) for i in range(N - 1)]


def _ranks(ent: np.ndarray, rel: np.ndarray, facts: list[tuple[int, int, int]]) -> np.ndarray:
    """Rank of the true tail among all entities by TransE distance |h + r - t| (Bordes et al. 2013), raw."""
    ranks = []
    for h, r, t in facts:
        dist = np.linalg.norm(ent[h] + rel[r] - ent, axis=1)
        ranks.append(1 + int(np.sum(dist < dist[t])))
    return np.array(ranks)


def _mrr_hits(ranks: np.ndarray) -> tuple[float, float]:
    return float(np.mean(1.0 / ranks)), float(np.mean(ranks <= 10))


def test_transe_learns_the_graph() -> None:
    gen = torch.Generator().manual_seed(0)
    ent = torch.randn(N, DIM, generator=gen).requires_grad_(True)
    rel = (0.1 * torch.randn(2, DIM, generator=gen)).requires_grad_(True)
    base_mrr, base_hits = _mrr_hits(_ranks(ent.detach().numpy(), rel.detach().numpy(), FACTS))
    heads, rels, tails = (torch.tensor(c) for c in zip(*FACTS))

    def score(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (ent[h] + rel[r] - ent[t]).norm(dim=-1)

    def margin_loss(epoch: int) -> torch.Tensor:
        corrupt = torch.randint(0, N, (len(FACTS), NEG), generator=gen)
        pos = score(heads, rels, tails)[:, None]
        neg = score(heads[:, None], rels[:, None], corrupt)
        return torch.relu(MARGIN + pos - neg).mean()

    history = Trainer({"entities": ent, "relations": rel}, optimizer=("adam", {"lr": 0.05}),
                      epochs=200, out=None).run(margin_loss)
    assert history[-1] < history[0] / 3
    mrr, hits = _mrr_hits(_ranks(ent.detach().numpy(), rel.detach().numpy(), FACTS))
    print(f"MRR: {mrr:.4f}, Hits@10: {hits:.4f} (random embeddings: MRR {base_mrr:.4f}, Hits@10 {base_hits:.4f})")
    assert mrr > 0.75 and hits == 1.0
    assert mrr > base_mrr + 0.5
