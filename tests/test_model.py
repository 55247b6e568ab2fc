"""The cached TorchScript U-Net that ClientApp processes load: the same network as MONAI's,
step for step, and loaded without importing MONAI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from common.training.model import ModelConfig, build_unet, load_unet

SMALL = ModelConfig(channels=(4, 8, 16))


def test_cached_network_trains_exactly_like_the_monai_one(tmp_path: Path) -> None:
    scripted = load_unet(SMALL, tmp_path)
    (cached,) = tmp_path.glob("unet-*.torchscript")
    eager = build_unet(SMALL)
    assert list(scripted.state_dict()) == list(eager.state_dict())
    scripted.load_state_dict(eager.state_dict())
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 4, (4, 32, 32))
    with torch.jit.optimized_execution(False):
        for model in (eager, scripted):
            model.train()
            torch.nn.functional.cross_entropy(model(x), y).backward()
    for (name, a), b in zip(eager.named_parameters(), scripted.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(
        eager.state_dict().items(), scripted.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name  # batch-norm running statistics too
    # a second call reads the file; another configuration gets its own file
    before = cached.stat().st_mtime_ns
    load_unet(SMALL, tmp_path)
    assert cached.stat().st_mtime_ns == before
    load_unet(ModelConfig(channels=(4, 8)), tmp_path)
    assert len(list(tmp_path.glob("unet-*.torchscript"))) == 2


def test_a_fresh_process_loads_it_without_monai(tmp_path: Path) -> None:
    load_unet(SMALL, tmp_path)
    code = (
        "import sys; from common.training.model import ModelConfig, load_unet; "
        f"m = load_unet(ModelConfig(channels=(4, 8, 16)), {str(tmp_path)!r}); "
        "print(sum(p.numel() for p in m.parameters()), 'monai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd()
    )
    params = sum(p.numel() for p in build_unet(SMALL).parameters())
    assert out.stdout.split() == [str(params), "False"]


def test_a_corrupt_cached_file_is_rebuilt(tmp_path: Path) -> None:
    load_unet(SMALL, tmp_path)
    (cached,) = tmp_path.glob("unet-*.torchscript")
    cached.write_bytes(b"not a model")
    model = load_unet(SMALL, tmp_path)
    assert len(model.state_dict()) == len(build_unet(SMALL).state_dict())
    assert torch.jit.load(str(cached)) is not None  # the file was written again


def test_pointwise_head_gives_each_class_one_row_of_a_1x1_conv(tmp_path: Path) -> None:
    """``head = "pointwise"``: the U-Net's top block outputs ``channels[0]`` features and a 1x1
    conv maps them to the 4 classes, so the class slices are exactly that conv's rows (the
    default MONAI head's class slices are its last 4->4 conv only; its 4-channel transposed
    conv and BatchNorm mix the classes)."""

    from common.training.class_slices import class_owners

    config = ModelConfig(channels=(4, 8, 16), head="pointwise")
    model = build_unet(config)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4, 32, 32)
    owned = {k: v for k, v in class_owners(model).items() if (v >= 0).any()}
    assert sorted(owned) == ["1.bias", "1.weight"]
    assert owned["1.weight"].shape == (4, 4, 1, 1)
    for c in range(4):
        assert (owned["1.weight"][c] == c).all() and owned["1.bias"][c] == c
    default = class_owners(build_unet(SMALL))
    assert sum(int((v >= 0).sum()) for v in default.values()) == 4 * (4 * 9 + 1)
    scripted = load_unet(config, tmp_path)  # the cached TorchScript network has the same names
    assert list(scripted.state_dict()) == list(model.state_dict())


def _load_counting_builds(args: tuple[str, str]) -> int:
    """In a forked process: load_unet, with every build of the network recorded in a file."""
    cache, builds = args
    import common.training.model as model_module

    original = model_module.build_unet

    def counting(config: ModelConfig | None = None) -> torch.nn.Module:
        with open(builds, "a") as out:
            out.write("built\n")
        return original(config)

    model_module.build_unet = counting
    return len(model_module.load_unet(SMALL, Path(cache)).state_dict())


def test_processes_sharing_a_cache_build_the_network_once(tmp_path: Path) -> None:
    """Simulated sites share one cache: the first builds the TorchScript file, the others wait
    for it and load it (without the lock each would build its own, ~3 s of CPU apiece)."""
    import multiprocessing

    builds = tmp_path / "builds.txt"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        sizes = pool.map(_load_counting_builds, [(str(tmp_path / "cache"), str(builds))] * 3)
    assert builds.read_text().splitlines() == ["built"]
    assert len(set(sizes)) == 1 and sizes[0] == len(build_unet(SMALL).state_dict())
    assert len(list((tmp_path / "cache").glob("unet-*.torchscript"))) == 1
