"""Platform detection from fixture /proc trees, and the default buffer size it implies."""

from pathlib import Path

import pytest

from stemdeck.platform_info import PlatformInfo, detect, raspberry_pi_generation

FIXTURES = Path(__file__).parent / "fixtures" / "platforms"


@pytest.mark.parametrize(
    "fixture, tier, buffer_size, description, label",
    [
        (
            "raspberry-pi-4",
            "raspberry-pi-4",
            1024,
            "Raspberry Pi 4 Model B Rev 1.4, 4 cores",
            "Raspberry Pi 4",
        ),
        (
            "raspberry-pi-5",
            "raspberry-pi-5",
            512,
            "Raspberry Pi 5 Model B Rev 1.0, 4 cores",
            "Raspberry Pi 5",
        ),
        (
            "desktop-8-core",
            "strong-desktop",
            256,
            "Intel(R) Core(TM) i7-9700K CPU @ 3.60GHz, 8 cores",
            "strong desktop, 8 cores",
        ),
        (
            "vm-2-core",
            "other",
            512,
            "Intel Xeon Processor (Skylake, IBRS) (virtual machine), 2 cores",
            "ordinary machine, 2 cores",
        ),
    ],
)
def test_fixture_platforms(fixture, tier, buffer_size, description, label):
    info = detect(FIXTURES / fixture, system="Linux")
    assert info.tier == tier
    assert info.default_buffer_size == buffer_size
    assert info.description == description
    assert info.label == label


def test_memory_and_cache_default_from_meminfo():
    pi4 = detect(FIXTURES / "raspberry-pi-4", system="Linux")
    assert pi4.memory_mb == 3884376 // 1024
    # A quarter of 3793 MB, rounded down to 64 MB.
    assert pi4.default_cache_mb() == 896
    desktop = detect(FIXTURES / "desktop-8-core", system="Linux")
    assert desktop.default_cache_mb() == 2048  # capped


def test_cores_override():
    info = detect(FIXTURES / "vm-2-core", system="Linux", cores=8)
    assert info.tier == "strong-desktop"
    assert info.default_buffer_size == 256


def _tree(tmp_path, model=None, cpuinfo=""):
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    return tmp_path


def _arm_cpuinfo(n, extra=""):
    cores = "\n".join(f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n" for i in range(n))
    return cores + "\n" + extra


def test_pi4_from_revision_code_when_no_model_is_published(tmp_path):
    root = _tree(tmp_path, cpuinfo=_arm_cpuinfo(4, "Revision\t: c03114\n"))
    assert detect(root, system="Linux").tier == "raspberry-pi-4"


def test_arm_cpu_alone_is_not_a_raspberry_pi(tmp_path):
    # The Pi 4's own CPU (Cortex-A72, part 0xd08) on another board.
    root = _tree(tmp_path, model="Pine64 RockPro64 v2.1", cpuinfo=_arm_cpuinfo(4))
    info = detect(root, system="Linux")
    assert info.tier == "other"
    assert info.default_buffer_size == 512
    assert info.description == "Pine64 RockPro64 v2.1, 4 cores"


def test_old_style_revision_code_is_not_guessed(tmp_path):
    root = _tree(tmp_path, cpuinfo=_arm_cpuinfo(1, "Revision\t: 000e\n"))
    assert detect(root, system="Linux").tier == "other"


@pytest.mark.parametrize(
    "model, generation",
    [
        ("Raspberry Pi 4 Model B Rev 1.4", 4),
        ("Raspberry Pi 400 Rev 1.0", 4),
        ("Raspberry Pi Compute Module 4 Rev 1.0", 4),
        ("Raspberry Pi 5 Model B Rev 1.0", 5),
        ("Raspberry Pi 500 Rev 1.0", 5),
        ("Raspberry Pi Compute Module 5 Rev 1.0", 5),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", 3),
        ("Raspberry Pi Zero 2 W Rev 1.0", 3),
        ("Raspberry Pi Zero W Rev 1.1", 1),
        ("Raspberry Pi Model B Rev 2", 1),
        ("Raspberry Pi 2 Model B Rev 1.1", 2),
        ("Pine64 RockPro64 v2.1", None),
        (None, None),
    ],
)
def test_raspberry_pi_generation_from_model(model, generation):
    assert raspberry_pi_generation(model, None) == generation


@pytest.mark.parametrize(
    "revision, generation",
    [("c03114", 4), ("b03115", 4), ("c03130", 4), ("d04170", 5), ("a02082", 3), ("902120", 3), ("000e", None), ("zz", None)],
)
def test_raspberry_pi_generation_from_revision(revision, generation):
    assert raspberry_pi_generation(None, revision) == generation


def test_boards_older_than_pi4_start_larger(tmp_path):
    root = _tree(tmp_path, model="Raspberry Pi 3 Model B Rev 1.2", cpuinfo=_arm_cpuinfo(4))
    info = detect(root, system="Linux")
    assert info.tier == "raspberry-pi-old"
    assert info.default_buffer_size == 2048


def test_empty_tree_is_an_ordinary_machine(tmp_path):
    info = detect(tmp_path, system="Linux")
    assert info.tier == "other"
    assert info.cores == 1
    assert info.memory_mb is None
    assert info.default_cache_mb() == 1024
    assert info.description == "unknown Linux machine, 1 core"


@pytest.mark.parametrize(
    "brand, cores, tier",
    [
        ("Apple M2 Pro", 4, "strong-desktop"),  # cores forced low: the chip alone decides
        ("Apple M1 Max", 4, "strong-desktop"),
        ("Apple M2 Ultra", 4, "strong-desktop"),
        ("Apple M1", 4, "other"),
        ("Apple M1", 8, "strong-desktop"),
        ("Intel(R) Core(TM) i5-7360U CPU @ 2.30GHz", 4, "other"),
    ],
)
def test_macos_from_sysctl(brand, cores, tier):
    values = {"machdep.cpu.brand_string": brand, "hw.model": "Mac14,9", "hw.logicalcpu": str(cores), "hw.memsize": str(16 << 30)}
    info = detect("/nonexistent", system="Darwin", sysctl=values)
    assert info.tier == tier
    assert info.cores == cores
    assert info.memory_mb == 16384
    assert info.description == f"{brand}, {cores} cores"


def test_this_machine():
    info = detect()
    assert isinstance(info, PlatformInfo)
    assert info.cores >= 1
    assert info.default_buffer_size in (256, 512, 1024, 2048)
    assert info.description
