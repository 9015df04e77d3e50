"""Models by name: shapes, heads, every parameter used, misfits rejected."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch

from landmeta.config import ModelConfig
from landmeta.errors import ModelError
from landmeta.models import build_model, is_head


@pytest.mark.parametrize("name,kind,shape", [
    ("conv", "classification", (2, 4)),
    ("smp-classifier", "classification", (2, 4)),
    ("unet", "segmentation", (2, 4, 32, 32)),
])
def test_models_by_name(name: str, kind: str, shape: tuple[int, ...]) -> None:
    cfg = ModelConfig(name=name, width=8, depth=3, encoder_depth=3, decoder_channels=[16, 8, 8])
    model = build_model(cfg, in_channels=5, num_classes=4, kind=kind, chip_size=32)
    out = model(torch.randn(2, 5, 32, 32))
    assert out.shape == shape
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # no dead stages
    heads = [n for n, _ in model.named_parameters() if is_head(n)]
    assert heads and all(n.split(".")[0] in ("head", "segmentation_head") for n in heads)


@pytest.mark.parametrize("encoder", ["mobilenet_v2", "efficientnet-b0"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_unet_encoders_and_norms(encoder: str, norm: str) -> None:
    cfg = ModelConfig(name="unet", encoder=encoder, encoder_depth=3, decoder_channels=[16, 8, 8], norm=norm)
    model = build_model(cfg, in_channels=13, num_classes=3, kind="segmentation", chip_size=32)
    assert model(torch.randn(2, 13, 32, 32)).shape == (2, 3, 32, 32)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert has_bn == (norm == "batch")


def test_build_is_deterministic_under_seed() -> None:
    cfg = ModelConfig(name="conv", width=8, depth=2)
    torch.manual_seed(3)
    a = build_model(cfg, 3, 4, "classification").state_dict()
    torch.manual_seed(3)
    b = build_model(cfg, 3, 4, "classification").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cfg,kind,chip,match", [
    (ModelConfig(name="conv"), "segmentation", 32, "classification model"),
    (ModelConfig(name="unet"), "classification", 32, "segmentation model"),
    (ModelConfig(name="vit"), "classification", 32, "unknown model"),
    (ModelConfig(name="unet", encoder_depth=3), "segmentation", 36, "does not fit"),
    (ModelConfig(name="conv", depth=6), "classification", 32, "does not fit"),
    (ModelConfig(name="unet", encoder_depth=3, decoder_channels=[8, 8]), "segmentation", 32, "decoder_channels"),
    (ModelConfig(name="unet", encoder="no-such-encoder"), "segmentation", 32, "model.encoder"),
])
def test_misfits_raise_model_error(cfg: ModelConfig, kind: str, chip: int, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        build_model(cfg, 4, 3, kind, chip_size=chip)


def test_local_encoder_weights(tmp_path) -> None:
    cfg = ModelConfig(name="unet", encoder_depth=3, decoder_channels=[16, 8, 8])
    source = smp.encoders.get_encoder("resnet18", in_channels=4, depth=5, weights=None)
    torch.save(source.state_dict(), tmp_path / "enc.pt")  # a full encoder, as weight files are
    cfg.encoder_weights = str(tmp_path / "enc.pt")
    model = build_model(cfg, 4, 3, "segmentation")
    assert torch.equal(model.encoder.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    torch.save({"conv1.weight": source.conv1.weight}, tmp_path / "part.pt")
    cfg.encoder_weights = str(tmp_path / "part.pt")
    with pytest.raises(ModelError, match="lack"):
        build_model(cfg, 4, 3, "segmentation")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    cfg.encoder_weights = str(tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="bad.pt"):
        build_model(cfg, 4, 3, "segmentation")


def test_batchnorm_mode_keeps_values_and_gives_exact_second_derivatives() -> None:
    """Inside BatchNormMode training-mode BatchNorm gives the same output, running statistics and
    gradients as PyTorch's, and its hand-written double backward passes gradgradcheck."""
    from landmeta.models.batchnorm import BatchNormMode

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)

    def bn(x, w, b, stats=(None, None)):
        with BatchNormMode():
            return torch.nn.functional.batch_norm(x, *stats, w, b, training=True)

    assert torch.autograd.gradcheck(bn, (x, w, b)) and torch.autograd.gradgradcheck(bn, (x, w, b))
    ours, theirs = (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)), \
        (torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    out = bn(x, w, b, ours)
    ref = torch.nn.functional.batch_norm(x, *theirs, w, b, training=True)
    assert torch.equal(out, ref) and all(torch.equal(a, c) for a, c in zip(ours, theirs))
    up = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for a, c in zip(torch.autograd.grad(out, (x, w, b), up), torch.autograd.grad(ref, (x, w, b), up)):
        assert torch.equal(a, c)
    double = [torch.autograd.grad((grads[0] ** 2).sum() + grads[1].sum(), (x, w))
              for grads in (torch.autograd.grad((f ** 3).sum(), (x, w), create_graph=True)
                            for f in (bn(x, w, b), torch.nn.functional.batch_norm(x, None, None, w, b, training=True)))]
    for a, c in zip(*double):
        torch.testing.assert_close(a, c)
