"""Proto-MAML: the head set from support prototypes, its meta-gradient, training and evaluation, bad input."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from landmeta.cli import main
from landmeta.config import Config, MetaConfig, ModelConfig
from landmeta.errors import ModelError
from landmeta.evaluation.baselines import head_inputs
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.maml import (
    adapted_names,
    build_rates,
    forward,
    inner_loop,
    meta_step,
    model_state,
    prototype_init,
    task_loss,
)
from landmeta.meta.prototypes import prototype_head, prototype_rows
from landmeta.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from store_factory import make_store  # noqa: E402


def conv_model(classes: int = 3) -> torch.nn.Module:
    """The paper's conv classifier, tiny, float64."""
    torch.manual_seed(0)
    return build_model(ModelConfig(name="conv", width=4, depth=2), 3, classes, "classification").double()


def unet_model() -> torch.nn.Module:
    """A small U-Net over 4 classes, float64, train mode."""
    torch.manual_seed(0)
    return build_model(ModelConfig(name="unet", encoder_depth=3, decoder_channels=[8, 8, 8]), 3, 4,
                       "segmentation").double().train()


def cls_task(seed: int = 1):
    """A 3-way 2-shot task of 8-px chips, float64."""
    g = torch.Generator().manual_seed(seed)
    xs, xq = (torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    return xs, torch.arange(3).repeat(2), xq, torch.arange(3).repeat(2)


def seg_task(seed: int = 1):
    """Two support and two query chips of 16 px; class 3 appears in the query only, 255 pixels ignored."""
    g = torch.Generator().manual_seed(seed)
    xs, xq = (torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    ys = torch.randint(0, 3, (2, 16, 16), generator=g)
    ys[:, :3] = 255
    yq = torch.randint(0, 4, (2, 16, 16), generator=g)
    return xs, ys, xq, yq


def reference_query_loss(model: torch.nn.Module, theta: dict, task, steps: int, lr: float) -> float:
    """L(φ(θ), D_query) in plain PyTorch, as the method is defined: a copy of the model at θ whose head
    is set (by value) from the support's class prototypes, `steps` steps of torch.optim.SGD on the
    support, then the query loss; batch statistics throughout (train mode)."""
    xs, ys, xq, yq = task
    net = copy.deepcopy(model).train()
    layer = net.head if hasattr(net, "head") else net.segmentation_head[0]
    with torch.no_grad():
        for name, param in net.named_parameters():
            param.copy_(theta[name])
        feats = head_inputs(net, xs)
        feats = feats if feats.dim() == 2 else feats.permute(0, 2, 3, 1)
        for k in range(layer.weight.shape[0]):
            if (ys == k).any():
                c = feats[ys == k].mean(0)
                if layer.weight.dim() == 4:
                    layer.weight[k] = 0.0
                    layer.weight[k, :, 1, 1] = 2 * c
                else:
                    layer.weight[k] = 2 * c
                layer.bias[k] = -(c ** 2).sum()
    sgd = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        sgd.zero_grad()
        task_loss(net(xs), ys).backward()
        sgd.step()
    with torch.no_grad():
        return task_loss(net(xq), yq).item()


@pytest.mark.parametrize("kind,steps", [("classification", 1), ("classification", 3), ("segmentation", 1)])
def test_meta_gradient_matches_finite_differences(kind: str, steps: int) -> None:
    """The second-order meta-gradient, through the inner loop and the prototype initialisation, agrees
    with central differences of a plain-PyTorch reference along random directions (float64)."""
    model, task = (conv_model(), cls_task()) if kind == "classification" else (unet_model(), seg_task())
    cfg = MetaConfig(method="protomaml", inner_steps=steps, inner_lr=0.3 if kind == "classification" else 0.1)
    meta_step(model, build_rates(model, cfg), cfg, [task], outer_step=0)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(5)
    for _ in range(2):
        direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in base.items()}
        analytic = sum((grads[n] * direction[n]).sum() for n in base).item()
        eps = 1e-7  # small: ReLU and max-pool kinks lie within 1e-6 of θ here (plain MAML's U-Net loss too)
        values = [reference_query_loss(model, {n: base[n] + s * eps * direction[n] for n in base}, task,
                                       steps, cfg.inner_lr) for s in (1, -1)]
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(analytic - numeric) / abs(numeric) < 1e-3


def test_first_order_meta_gradient_still_flows_through_the_prototypes() -> None:
    """First order detaches the inner gradients only: the meta-gradient is the query gradient at φ
    plus its head part carried back through the prototypes to the body."""
    model, (xs, ys, xq, yq) = conv_model(), cls_task()
    cfg = MetaConfig(method="protomaml", inner_steps=2, inner_lr=0.3, first_order=True)
    meta_step(model, build_rates(model, cfg), cfg, [(xs, ys, xq, yq)], outer_step=0)
    params, buffers = model_state(model)
    start = prototype_init(model, params, buffers, xs, ys)
    phi = inner_loop(model, {n: p.detach().requires_grad_() for n, p in start.items()}, buffers,
                     build_rates(model, cfg), adapted_names(model, "protomaml"), xs, ys, 2, first_order=True)[-1]
    at_phi = dict(zip(phi, torch.autograd.grad(task_loss(forward(model, phi, buffers, xq), yq), list(phi.values()))))
    body = [n for n in params if not n.startswith("head")]
    through = torch.autograd.grad([start["head.weight"], start["head.bias"]], [params[n] for n in body],
                                  grad_outputs=[at_phi["head.weight"], at_phi["head.bias"]])
    for name, extra in zip(body, through):
        torch.testing.assert_close(model.get_parameter(name).grad, at_phi[name] + extra, msg=name)
    assert float(torch.stack([t.abs().sum() for t in through]).sum()) > 0


def test_classifier_head_is_set_to_prototypes() -> None:
    """Row k = 2·c_k, bias −‖c_k‖² with c_k the mean pooled feature of class k (batch statistics), so the
    logits are ‖f‖² − ‖f − c_k‖²."""
    model, (xs, ys, _, _) = conv_model(), cls_task()
    params, buffers = model_state(model)
    with torch.no_grad():
        start = prototype_init(model, params, buffers, xs, ys)
        feats = model.train().body(xs).mean(dim=(2, 3))
    protos = torch.stack([feats[ys == k].mean(0) for k in range(3)])
    torch.testing.assert_close(start["head.weight"], 2 * protos)
    torch.testing.assert_close(start["head.bias"], -(protos ** 2).sum(1))
    with torch.no_grad():
        logits = forward(model, start, buffers, xs)
    torch.testing.assert_close(logits, (feats ** 2).sum(1, keepdim=True) - torch.cdist(feats, protos) ** 2)
    assert torch.equal(start["body.0.weight"], params["body.0.weight"])


def test_segmentation_head_is_set_from_masked_average_pooling() -> None:
    """The 3×3 head's centre tap is 2·c_k (masked average of the decoder features, 255 left out), the
    other taps 0; a class absent from the support keeps its row."""
    model, (xs, ys, _, _) = unet_model(), seg_task()
    params, buffers = model_state(model)
    with torch.no_grad():
        start = prototype_init(model, params, buffers, xs, ys)
    feats = head_inputs(model, xs).permute(0, 2, 3, 1)  # train mode: the support's batch statistics
    weight, bias = start["segmentation_head.0.weight"], start["segmentation_head.0.bias"]
    for k in range(3):
        c = feats[ys == k].mean(0)
        torch.testing.assert_close(weight[k, :, 1, 1], 2 * c)
        torch.testing.assert_close(bias[k], -(c ** 2).sum())
        assert weight[k].abs().sum() == weight[k, :, 1, 1].abs().sum()  # every other tap 0
    assert torch.equal(weight[3], params["segmentation_head.0.weight"][3])
    assert torch.equal(bias[3], params["segmentation_head.0.bias"][3])


def test_rows_without_labelled_samples_are_kept_and_foreign_labels_refused() -> None:
    """Only rows of labelled classes change; a label beyond the head's rows is a ModelError."""
    weight, bias = torch.randn(3, 2), torch.randn(3)
    new_weight, new_bias = prototype_rows(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([2, 2]), weight, bias)
    assert torch.equal(new_weight[:2], weight[:2]) and torch.equal(new_bias[:2], bias[:2])
    assert new_weight[2].tolist() == [4.0, 6.0] and new_bias[2].item() == -13.0
    with pytest.raises(ModelError, match="label 3 for a head of 3 rows"):
        prototype_rows(torch.zeros(1, 2), torch.tensor([3]), weight, bias)


def test_adaptation_starts_from_the_prototype_head() -> None:
    """At test time, 0 inner steps leave the model with the prototype head (global head cut to the task's
    classes first); the inner steps then start from it."""
    config = Config(model=ModelConfig(name="conv", width=4, depth=2),
                    meta=MetaConfig(method="protomaml", class_head="global", inner_lr=0.3))
    ckpt = Checkpoint(method="protomaml", kind="classification", config=config, model_state={}, bands=(),
                      class_names=(), class_colors=None, norm_mean=(), norm_std=(), chip_size=8,
                      store_chip_size=8, in_channels=3, num_classes=6, step=0)
    model, (xs, ys, _, _) = conv_model(6).float(), cls_task()
    xs = xs.float()
    params, buffers = model_state(model.train())
    with torch.no_grad():
        expected = prototype_init(model, params, buffers, xs, ys)
    adapted = adapt(ckpt, model, xs, ys, steps=0, classes=[5, 0, 2], norm_stats="trained")
    torch.testing.assert_close(adapted.head.weight, expected["head.weight"][:3])
    moved = adapt(ckpt, model, xs, ys, steps=1, classes=[5, 0, 2], norm_stats="trained")
    assert not torch.allclose(moved.head.weight, adapted.head.weight)


def test_heads_that_cannot_be_set_are_refused() -> None:
    """The U-Net's 3×3 head is settable; a head pattern naming the conv body is not."""
    assert prototype_head(unet_model()).weight == "segmentation_head.0.weight"
    with pytest.raises(ModelError, match="head `body` holds Conv2d, BatchNorm2d, ReLU, MaxPool2d, not one"):
        prototype_head(conv_model(), "body")


def test_train_and_evaluate_protomaml(tmp_path: Path) -> None:
    """A short real run of `landmeta train --method protomaml` and `landmeta evaluate` of it: its rows,
    its nearest-class-mean baseline, and no 0-shot (its head rows all come from the support)."""
    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--method", "protomaml", "--data", str(store), "--out", str(run),
                 "--no-progress"]) == 0
    assert Checkpoint.load(run / "best.pt").method == "protomaml"
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 4 and metrics.val_metric.notna().any()
    out = tmp_path / "results"
    assert main(["evaluate", "--data", str(store), "--runs", str(run), "--out", str(out), "--shots", "0,1",
                 "--tasks", "2", "--set", "eval.rf_trees=5", "--set", "eval.finetune_steps=[2]",
                 "--set", "eval.bootstrap=200"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert list(meta["methods"]) == ["protomaml", "random", "rf", "ncm-protomaml", "rff-protomaml"]
    assert meta["reference"] == "protomaml" and meta["methods"]["ncm-protomaml"]["family"] == "ncm"
    results = pd.read_csv(out / "results.csv")
    assert sorted(results[results.shots == 1].method.unique()) == ["ncm-protomaml", "protomaml", "random", "rf",
                                                                   "rff-protomaml"]
    assert results[results.shots == 0].empty


def test_train_protomaml_unet_and_adapt(tmp_path: Path) -> None:
    """A short real segmentation run; adapting it to a support set that lacks a class sets the other
    rows of the 3×3 head from prototypes and keeps that class's meta-learned row."""
    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny-seg", "--method", "protomaml", "--data", str(store), "--out", str(run),
                 "--no-progress"]) == 0
    ckpt = Checkpoint.load(run / "last.pt")
    model = ckpt.model()
    xs, ys = torch.randn(2, len(ckpt.bands), 32, 32), torch.randint(0, 3, (2, 32, 32))
    adapted = adapt(ckpt, model, xs, ys, steps=0)
    head, before = adapted.segmentation_head[0], model.segmentation_head[0]
    assert torch.equal(head.weight[3:], before.weight[3:]) and torch.equal(head.bias[3:], before.bias[3:])
    assert not torch.equal(head.weight[:3], before.weight[:3])
    assert head.weight[:3, :, 0, 0].abs().sum() == 0


def test_protomaml_on_a_head_that_cannot_be_set_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    """`train --method protomaml` with `meta.head_pattern=body`: one line, exit 2, no run folder."""
    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    code = main(["train", "--config", "tiny", "--method", "protomaml", "--data", str(store), "--out", str(run),
                 "--no-progress", "--set", "meta.head_pattern=body"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "meta.head_pattern='body'" in err and "cannot set it from prototypes" in err
    assert not run.exists()
