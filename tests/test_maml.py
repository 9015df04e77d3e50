"""Correctness of the MAML core: meta-gradients, inner steps, ANIL/BOIL, learned rates, BatchNorm."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from landmeta.cli import main
from landmeta.config import Config, MetaConfig, ModelConfig
from landmeta.errors import ConfigError
from landmeta.meta.adapt import adapt
from landmeta.meta.checkpoint import Checkpoint
from landmeta.meta.maml import (
    InnerRates,
    adapted_names,
    build_rates,
    build_step_norms,
    forward,
    head_rows,
    inner_loop,
    meta_step,
    model_state,
    step_weights,
    task_loss,
)
from landmeta.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from store_factory import make_store  # noqa: E402


def adaptable(config: Config, method: str, **fields) -> Checkpoint:
    """What `adapt` reads of a checkpoint (method, kind, config, rates, step statistics); no weights."""
    return Checkpoint(method=method, kind="classification", config=config, model_state={}, bands=(), class_names=(),
                      class_colors=None, norm_mean=(), norm_std=(), chip_size=8, store_chip_size=8, in_channels=3,
                      num_classes=4, step=0, **fields)

def small_model(dtype: torch.dtype = torch.float64, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name="conv", width=width, depth=2), 3, 3, "classification").to(dtype)


def small_task(dtype: torch.dtype = torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    xs, xq = torch.randn(6, 3, 8, 8, generator=g, dtype=dtype), torch.randn(6, 3, 8, 8, generator=g, dtype=dtype)
    ys = yq = torch.arange(3).repeat(2)
    return xs, ys, xq, yq


def query_loss(model, params, rates, names, task, steps, first_order=False):
    xs, ys, xq, yq = task
    buffers = dict(model.named_buffers())
    phi = inner_loop(model, params, buffers, rates, names, xs, ys, steps, first_order)[-1]
    return task_loss(forward(model, phi, buffers, xq), yq)


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_finite_differences(steps: int) -> None:
    model, task = small_model(), small_task()
    cfg = MetaConfig(method="maml", inner_steps=steps, inner_lr=0.3, meta_batch=1)
    rates = build_rates(model, cfg)
    meta_step(model, rates, cfg, [task], outer_step=0)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    names = adapted_names(model, "maml")
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(5)
    for _ in range(3):  # directional derivatives along random directions
        direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in base.items()}
        analytic = sum((grads[n] * direction[n]).sum() for n in base).item()
        eps = 1e-5
        values = []
        for sign in (1, -1):
            params = {n: (base[n] + sign * eps * direction[n]).requires_grad_() for n in base}
            values.append(query_loss(model, params, rates, names, task, steps).item())
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(analytic - numeric) / abs(numeric) < 1e-3


def test_first_order_is_query_gradient_at_phi() -> None:
    model, task = small_model(), small_task()
    cfg = MetaConfig(method="fomaml", inner_steps=2, inner_lr=0.3, meta_batch=1)
    rates = build_rates(model, cfg)
    meta_step(model, rates, cfg, [task], outer_step=0)
    names = adapted_names(model, "maml")
    params, buffers = model_state(model)
    phi = inner_loop(model, params, buffers, rates, names, task[0], task[1], 2, first_order=True)[-1]
    phi = {n: p.detach().requires_grad_() for n, p in phi.items()}
    loss = task_loss(forward(model, phi, buffers, task[2]), task[3])
    expected = torch.autograd.grad(loss, list(phi.values()))
    for (name, param), grad in zip(model.named_parameters(), expected):
        torch.testing.assert_close(param.grad, grad, msg=name)


def test_first_order_differs_from_second_order() -> None:
    task = small_task()
    out = []
    for method in ("maml", "fomaml"):
        model = small_model()
        cfg = MetaConfig(method=method, inner_steps=1, inner_lr=0.3)
        meta_step(model, build_rates(model, cfg), cfg, [task], outer_step=0)
        out.append(model.body[0].weight.grad)
    assert not torch.allclose(out[0], out[1])


def test_k_inner_steps_equal_k_manual_sgd_steps() -> None:
    model, (xs, ys, _, _) = small_model(), small_task()
    rates = InnerRates(model, adapted_names(model, "maml"), "fixed", 0.2, 3)
    params, buffers = model_state(model)
    phis = inner_loop(model, params, buffers, rates, adapted_names(model, "maml"), xs, ys, 3, first_order=False)
    manual = copy.deepcopy(model).train()
    sgd = torch.optim.SGD(manual.parameters(), lr=0.2)
    for step in range(3):
        sgd.zero_grad()
        task_loss(manual(xs), ys).backward()
        sgd.step()
        for name, param in manual.named_parameters():
            torch.testing.assert_close(phis[step][name], param, msg=f"step {step} {name}")


@pytest.mark.parametrize("method,changed", [("anil", "head"), ("boil", "body")])
def test_anil_boil_adapt_only_their_part(method: str, changed: str) -> None:
    model, (xs, ys, _, _) = small_model(), small_task()
    cfg = MetaConfig(method=method, inner_steps=2)
    names = adapted_names(model, method, cfg.head_pattern)
    params, buffers = model_state(model)
    phi = inner_loop(model, params, buffers, build_rates(model, cfg), names, xs, ys, 2, first_order=False)[-1]
    for name in params:
        same = phi[name] is params[name]
        assert same == (not name.startswith(changed)), name


def test_unet_head_is_found_by_pattern() -> None:
    model = build_model(ModelConfig(name="unet", encoder_depth=3, decoder_channels=[8, 8, 8]), 3, 3, "segmentation")
    assert adapted_names(model, "anil") == ["segmentation_head.0.weight", "segmentation_head.0.bias"]
    assert "segmentation_head.0.weight" not in adapted_names(model, "boil")


@pytest.mark.parametrize("mode", ["lslr", "metasgd"])
def test_learned_inner_rates_receive_gradients(mode: str) -> None:
    model, task = small_model(), small_task()
    cfg = MetaConfig(method="metasgd" if mode == "metasgd" else "maml", inner_lr_mode=mode, inner_steps=2)
    rates = build_rates(model, cfg)
    assert len(list(rates.parameters())) == len(list(model.parameters()))
    meta_step(model, rates, cfg, [task], outer_step=0)
    for key, rate in rates.rates.items():
        assert rate.grad is not None and rate.grad.abs().sum() > 0, key
        assert rate.shape == ((2,) if mode == "lslr" else dict(model.named_parameters())[key.replace("__", ".")].shape)


def test_lslr_rate_gradient_matches_finite_differences() -> None:
    model, task = small_model(), small_task()
    cfg = MetaConfig(method="maml", inner_lr_mode="lslr", inner_steps=2, inner_lr=0.3)
    rates = build_rates(model, cfg)
    meta_step(model, rates, cfg, [task], outer_step=0)
    key = "head__weight"
    analytic = rates.rates[key].grad[1].item()
    names = adapted_names(model, "maml")
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            rates.rates[key][1] += sign * 1e-5
        values.append(query_loss(model, params, rates, names, task, 2).item())
        with torch.no_grad():
            rates.rates[key][1] -= sign * 1e-5
    numeric = (values[0] - values[1]) / 2e-5
    assert abs(analytic - numeric) / abs(numeric) < 1e-3


def test_multi_step_weights_anneal_to_last_step() -> None:
    start, end = step_weights(4, 0, 100, True), step_weights(4, 100, 100, True)
    assert start == pytest.approx([0.25] * 4) and end == pytest.approx([0, 0, 0, 1])
    assert sum(step_weights(4, 37, 100, True)) == pytest.approx(1)
    assert step_weights(3, 0, 100, False) == [0, 0, 1]


def test_task_batch_gradient_is_mean_of_task_gradients() -> None:
    tasks = [small_task(seed=1), small_task(seed=2)]
    cfg = MetaConfig(method="maml", inner_steps=1)
    model = small_model()
    meta_step(model, build_rates(model, cfg), cfg, tasks, outer_step=0)
    together = model.head.weight.grad.clone()
    single = []
    for task in tasks:
        m = small_model()
        meta_step(m, build_rates(m, cfg), cfg, [task], outer_step=0)
        single.append(m.head.weight.grad)
    torch.testing.assert_close(together, (single[0] + single[1]) / 2)


def test_batchnorm_policy_running_stats() -> None:
    """Inner steps normalise with batch statistics; only the support pass at θ moves the running
    statistics; adaptation re-estimates them from the support set."""
    model, (xs, ys, xq, yq) = small_model(), small_task()
    bn = model.body[1]
    cfg = MetaConfig(method="maml", inner_steps=3)
    expected = copy.deepcopy(model).train()
    expected(xs)  # one ordinary train-mode pass over the support set at θ
    meta_step(model, build_rates(model, cfg), cfg, [(xs, ys, xq, yq)], outer_step=0)
    torch.testing.assert_close(bn.running_mean, expected.body[1].running_mean)
    assert int(bn.num_batches_tracked) == 1
    config = Config()
    config.model = ModelConfig(name="conv", width=4, depth=2)
    ckpt = adaptable(config, "maml")
    adapted = adapt(ckpt, model, xs, ys, steps=2)
    assert not adapted.training and model.body[1] is bn
    seen = []
    adapted.body[1].register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        adapted(xs)
    torch.testing.assert_close(adapted.body[1].running_mean, seen[0].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(adapted.body[1].running_var, seen[0].var(dim=(0, 2, 3)))


def test_segmentation_loss_ignores_255_and_empty_masks_give_zero() -> None:
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = torch.full((2, 4, 4), 255)
    loss = task_loss(logits, y)
    assert loss.item() == 0 and torch.isfinite(loss)
    y[0, 0, 0] = 1
    expected = torch.nn.functional.cross_entropy(logits[:1, :, 0, 0], torch.tensor([1]))
    torch.testing.assert_close(task_loss(logits, y), expected)


def test_global_head_rows_get_the_meta_gradient_of_the_task_head() -> None:
    """With a global head, a task uses its classes' rows: the meta-step equals MAML on a model whose
    head holds exactly those rows, and the other rows get no gradient."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="conv", width=4, depth=2), 3, 5, "classification").to(torch.float64)
    rows = torch.tensor([4, 1, 3])
    task = small_task()
    cfg = MetaConfig(method="maml", inner_steps=2, inner_lr=0.3, meta_batch=1)
    meta_step(model, build_rates(model, cfg), cfg, [task], outer_step=0, rows=[rows])
    cut = copy.deepcopy(model)
    cut.head = torch.nn.Linear(4, 3).to(torch.float64)
    with torch.no_grad():
        cut.head.weight.copy_(model.head.weight[rows])
        cut.head.bias.copy_(model.head.bias[rows])
    cut.zero_grad()
    meta_step(cut, build_rates(cut, cfg), cfg, [task], outer_step=0)
    assert torch.allclose(model.head.weight.grad[rows], cut.head.weight.grad)
    assert torch.allclose(model.body[0].weight.grad, cut.body[0].weight.grad)
    others = torch.tensor([0, 2])
    assert model.head.weight.grad[others].abs().sum() == 0 and model.head.bias.grad[others].abs().sum() == 0
    params, _ = model_state(model)
    assert head_rows(params, "head", None) is params


def test_random_init_head_is_never_cut_even_when_the_config_has_a_global_head() -> None:
    """The random-init baseline built from a global-head MAML run's config has an N-way head."""
    cfg = Config(model=ModelConfig(name="conv", width=4, depth=2), meta=MetaConfig(class_head="global"))
    ckpt = adaptable(cfg, "random")
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 4, "classification")
    xs, ys = torch.randn(4, 3, 8, 8), torch.arange(4)
    adapted = adapt(ckpt, model, xs, ys, steps=1, lr=0.01, classes=(6, 1, 3, 2))
    assert adapted(xs).shape == (4, 4)


def test_adaptation_follows_learned_per_step_rates() -> None:
    """LSLR rates are per step at test time too: a zero rate at step 0 leaves the first step idle."""
    cfg = Config(model=ModelConfig(name="conv", width=4, depth=2),
                 meta=MetaConfig(method="maml", inner_steps=2, inner_lr_mode="lslr", inner_lr=0.5))
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 3, "classification")
    rates = build_rates(model, cfg.meta)
    with torch.no_grad():
        for rate in rates.rates.values():
            rate[0] = 0.0
    ckpt = adaptable(cfg, "maml", inner_lrs=rates.state_dict())
    xs, ys, _, _ = small_task(torch.float32)
    one = adapt(ckpt, model, xs, ys, steps=1)
    two = adapt(ckpt, model, xs, ys, steps=2)
    assert torch.equal(one.head.weight, model.head.weight)
    assert not torch.equal(two.head.weight, model.head.weight)


def test_forward_without_update_reads_and_writes_no_running_statistics() -> None:
    model, (xs, _, _, _) = small_model(), small_task()
    params, buffers = model_state(model)
    before = {k: v.clone() for k, v in buffers.items()}
    out = forward(model, params, buffers, xs)
    assert all(torch.equal(before[k], v) for k, v in model.named_buffers())
    torch.testing.assert_close(out, copy.deepcopy(model).train()(xs))


def per_step_setup(steps: int = 2):
    model, task = small_model(), small_task()
    cfg = MetaConfig(method="maml", inner_steps=steps, inner_lr=0.3, per_step_bn=True)
    return model, task, cfg, build_rates(model, cfg), build_step_norms(model, cfg)


def batch_stats(model: torch.nn.Module, params: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Running statistics of one train-mode pass over `x` from reset statistics, at `params`."""
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        for name, param in probe.named_parameters():
            param.copy_(params[name])
    for m in probe.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    probe(x)
    return dict(probe.named_buffers())


def test_per_step_statistics_follow_the_weights_of_each_step() -> None:
    """Set 0 (the model's own) comes from the support pass at θ, set 1 from the support pass at φ_1,
    set 2 = K from the query pass at φ_2; normalisation and the meta-gradient stay those of batch
    statistics, i.e. the same as without per-step statistics."""
    model, (xs, ys, xq, yq), cfg, rates, norms = per_step_setup(2)
    reference = copy.deepcopy(model)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    phis = inner_loop(reference, params, dict(reference.named_buffers()), rates, adapted_names(model, "maml"),
                      xs, ys, 2, first_order=True)
    meta_step(model, rates, cfg, [(xs, ys, xq, yq)], outer_step=0, norms=norms)
    expected = [batch_stats(model, params, xs), batch_stats(model, phis[0], xs), batch_stats(model, phis[1], xq)]
    for step in range(3):
        got = norms.at(dict(model.named_buffers()), step)
        for name in ("body.1", "body.5"):
            for suffix in ("running_mean", "running_var", "num_batches_tracked"):
                key = f"{name}.{suffix}"
                torch.testing.assert_close(got[key], expected[step][key], msg=f"set {step} {key}")
    assert not torch.allclose(norms.at({}, 1)["body.1.running_mean"], norms.at({}, 2)["body.1.running_mean"])
    plain = small_model()
    meta_step(plain, build_rates(plain, cfg), MetaConfig(method="maml", inner_steps=2, inner_lr=0.3),
              [(xs, ys, xq, yq)], outer_step=0)
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_adaptation_holds_the_statistics_of_the_step_reached() -> None:
    model, task, cfg, rates, norms = per_step_setup(2)
    meta_step(model, rates, cfg, [task], outer_step=0, norms=norms)
    config = Config(model=ModelConfig(name="conv", width=4, depth=2), meta=cfg)
    config.eval.norm_stats = "trained"
    ckpt = adaptable(config, "maml", step_norm_stats=norms.state_dict())
    for steps, stats in [(0, 0), (1, 1), (2, 2), (5, 2)]:  # past K, the last set
        adapted = adapt(ckpt, model, task[0], task[1], steps=steps)
        expected = norms.at(dict(model.named_buffers()), stats)
        for key, value in adapted.named_buffers():
            torch.testing.assert_close(value, expected[key], msg=f"{steps} steps: {key}")


def test_per_step_statistics_are_off_by_default_and_need_batchnorm() -> None:
    assert build_step_norms(small_model(), MetaConfig()) is None
    torch.manual_seed(0)
    grouped = build_model(ModelConfig(name="conv", width=4, depth=2, norm="group"), 3, 3, "classification")
    with pytest.raises(ConfigError, match="per_step_bn"):
        build_step_norms(grouped, MetaConfig(per_step_bn=True))


def test_training_saves_and_resumes_per_step_statistics(tmp_path: Path) -> None:
    """A run with per-step statistics checkpoints them, resumes from them, and adapt uses them."""
    store = make_store(tmp_path / "store")
    out = tmp_path / "run"
    args = ["train", "--config", "tiny", "--data", str(store), "--out", str(out), "--no-progress"]
    assert main(args + ["--set", "meta.per_step_bn=true", "--set", "meta.inner_steps=2"]) == 0
    first = Checkpoint.load(out / "last.pt").step_norm_stats
    assert first is not None and all(bool((v == 4 * 2).all()) for k, v in first.items() if k.endswith("__count"))
    assert main(["train", "--data", str(store), "--out", str(out), "--no-progress", "--resume",
                 "--set", "meta.steps=5"]) == 0
    ckpt = Checkpoint.load(out / "last.pt")
    second = ckpt.step_norm_stats
    assert all(bool((v == 5 * 2).all()) for k, v in second.items() if k.endswith("__count"))
    assert not torch.equal(first["body__1__mean"], second["body__1__mean"])
    model = ckpt.model()
    xs = torch.randn(4, model.body[0].in_channels, 32, 32)
    adapted = adapt(ckpt, model, xs, torch.arange(4), steps=1, norm_stats="trained")
    torch.testing.assert_close(adapted.body[1].running_mean, second["body__1__mean"][0])


def test_per_step_statistics_start_as_the_models_own() -> None:
    """A run started from a pretrained network begins with its statistics in every step's set,
    not zero mean and unit variance (which would wreck its first adapted predictions)."""
    model, _, cfg, _, _ = per_step_setup(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    norms = build_step_norms(model, cfg)
    for name in norms.layers:
        bn = model.get_submodule(name)
        for step in (1, 2):
            mean, var, _ = norms._set(name, step)
            assert torch.equal(mean, bn.running_mean) and torch.equal(var, bn.running_var)


@pytest.mark.parametrize("per_step_bn", [False, True])
def test_keep_norm_stats_leaves_every_running_statistic_as_it_started(per_step_bn: bool) -> None:
    """meta.keep_norm_stats (e.g. MAML from a pretrained network): a meta-step changes no running
    statistic, neither the model's nor a per-step set; without it both move."""
    for keep in (True, False):
        model = small_model()
        cfg = MetaConfig(method="maml", inner_steps=2, inner_lr=0.3, per_step_bn=per_step_bn, keep_norm_stats=keep)
        norms = build_step_norms(model, cfg)
        before = {k: v.clone() for k, v in [*model.named_buffers(), *(norms.named_buffers() if norms else [])]}
        meta_step(model, build_rates(model, cfg), cfg, [small_task()], outer_step=0, norms=norms)
        after = dict([*model.named_buffers(), *(norms.named_buffers() if norms else [])])
        same = [torch.equal(before[k], after[k]) for k in before if not k.endswith("count") and "batches" not in k]
        assert all(same) if keep else not all(same)
