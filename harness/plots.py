"""Pictures of samples: an image grid, or a scatter over the target's density for 2-D data."""

from __future__ import annotations

from pathlib import Path

import torch

from harness import records


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_samples_png(path: Path, dataset, samples: torch.Tensor, max_images: int = 64) -> None:
    if dataset.kind == "image":
        from torchvision.utils import make_grid

        imgs = dataset.to_uint8(samples[:max_images])
        grid = make_grid(imgs, nrow=8, padding=1, pad_value=255).permute(1, 2, 0).numpy()
        plt = _pyplot()
        fig = plt.figure(figsize=(4, 4), dpi=100)
        ax = fig.add_axes([0, 0, 1, 1])
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", interpolation="nearest")
        ax.axis("off")
    else:
        fig = scatter_figure(dataset, samples)
    records.atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")
    _pyplot().close(fig)


def scatter_figure(dataset, samples: torch.Tensor, title: str | None = None):
    """Samples (first two coordinates) over the exact target density where there is one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    x = samples[:, :2].numpy()
    lo, hi = dataset.value_range
    target = dataset.target
    if target is not None and samples.shape[1] == 2:
        g = torch.linspace(lo, hi, 200)
        xx, yy = torch.meshgrid(g, g, indexing="xy")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
        dens = target.log_prob(pts).exp().reshape(200, 200).numpy()
        ax.contourf(xx.numpy(), yy.numpy(), dens, levels=20, cmap="Blues")
    ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:red", alpha=0.6)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_title(title or f"{len(x)} samples on {dataset.name}", fontsize=9)
    fig.tight_layout()
    return fig
