"""Built-in backbones: a residual MLP for vectors and a small DDPM/NCSN++-style U-Net for images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.backbones import ScalarEmbedding, activation
from harness.hookspecs import hookimpl


class ResidualMLP(nn.Module):
    """Residual MLP with a scalar (noise-level/time) embedding added in every block."""

    name = "mlp"
    description = "Residual MLP with noise-level/time embedding, for vector data"
    kinds = ("vector",)

    def __init__(self, in_shape, out_channels, conditional=True, width=128, depth=3, act="silu", emb_dim=64):
        super().__init__()
        (d,) = in_shape
        self.conditional = conditional
        self.inp = nn.Linear(d, width)
        self.emb = ScalarEmbedding(emb_dim, act) if conditional else None
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm": nn.LayerNorm(width),
                    "fc1": nn.Linear(width, width),
                    "cond": nn.Linear(emb_dim, width) if conditional else nn.Identity(),
                    "fc2": nn.Linear(width, width),
                }
            )
            for _ in range(depth)
        )
        self.act = activation(act)
        self.out = nn.Sequential(nn.LayerNorm(width), activation(act), nn.Linear(width, out_channels))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.inp(x)
        e = self.emb(c) if self.emb is not None and c is not None else None
        for b in self.blocks:
            z = b["fc1"](self.act(b["norm"](h)))
            if e is not None:
                z = z + b["cond"](e)
            h = h + b["fc2"](self.act(z))
        return self.out(h)


def _groups(ch: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_dim, act, dropout):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.cond = nn.Linear(emb_dim, cout) if emb_dim else None
        self.n2, self.c2 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.act = activation(act)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.c1(self.act(self.n1(x)))
        if self.cond is not None and e is not None:
            h = h + self.cond(e)[:, :, None, None]
        h = self.c2(self.drop(self.act(self.n2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(_groups(ch), ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """A small DDPM/NCSN++-style U-Net: residual blocks with GroupNorm, embedding of the scalar condition added
    in every block, self-attention at the coarsest level, skip connections; odd sizes (28 → 14 → 7) are handled
    by resizing to the skip's size on the way up."""

    name = "unet"
    description = "Small DDPM/NCSN++-style U-Net with noise-level conditioning, for images"
    kinds = ("image",)

    def __init__(self, in_shape, out_channels, conditional=True, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                 attention=True, dropout=0.0, act="silu"):
        super().__init__()
        cin = in_shape[0]
        emb_dim = 4 * ch if conditional else 0
        self.emb = ScalarEmbedding(emb_dim, act) if conditional else None
        self.inp = nn.Conv2d(cin, ch, 3, padding=1)
        self.down, chans, c = nn.ModuleList(), [ch], ch
        for i, m in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, ch * m, emb_dim, act, dropout))
                c = ch * m
                chans.append(c)
            if i < len(ch_mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                chans.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb_dim, act, dropout),
                                  SelfAttention(c) if attention else nn.Identity(),
                                  ResBlock(c, c, emb_dim, act, dropout)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + chans.pop(), ch * m, emb_dim, act, dropout))
                c = ch * m
            if i > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), activation(act), nn.Conv2d(c, out_channels, 3, padding=1))

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        e = self.emb(c) if self.emb is not None and c is not None else None
        h = self.inp(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                s = skips.pop()
                if h.shape[-2:] != s.shape[-2:]:
                    h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
                h = layer(torch.cat([h, s], dim=1), e)
            else:
                h = layer(h)
        return self.out(h)


@hookimpl
def register_backbones(register):
    register(ResidualMLP)
    register(UNet)
