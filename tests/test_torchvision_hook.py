"""The torchvision import hook: needed under CPU torch with the CUDA torchvision build, harmless else."""

import subprocess
import sys
import textwrap

import pytest
import torch

import ovseg3d_torchvision_hook as hook

cpu_torch = pytest.mark.skipif(torch.version.cuda is not None, reason="the hook acts only under CPU torch")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_hook_is_installed_at_startup():
    proc = _run("""
        import sys, ovseg3d_torchvision_hook as h
        print(h._FINDER in sys.meta_path, 'torch' in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    # The .pth registers the finder without importing torch: start-up stays fast.
    assert proc.stdout.split() == ["True", "False"]


def test_torchvision_and_open_clip_import_with_the_hook():
    proc = _run("""
        import torchvision, open_clip
        from torchvision import transforms
        import torch, ovseg3d_torchvision_hook as h
        img = transforms.Resize(8)(torch.rand(3, 16, 16))
        print(tuple(img.shape), h._result)
    """)
    assert proc.returncode == 0, proc.stderr
    shape, result = proc.stdout.rsplit(maxsplit=1)
    assert shape == "(3, 8, 8)"
    assert result in {"native", "schemas", "cuda-torch"}


@cpu_torch
def test_without_the_hook_the_cuda_torchvision_fails_or_loads_natively():
    # Reproduces the failure the hook exists for, so the hook is known to be what fixes it.
    proc = _run("""
        import sys, ovseg3d_torchvision_hook as h
        h.uninstall()
        try:
            import torchvision
        except RuntimeError as exc:
            print("FAILED", exc)
        else:
            print("IMPORTED")
    """)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("IMPORTED"):
        pytest.skip("this torchvision build loads natively under this torch; the hook is not needed")
    assert "torchvision::nms" in proc.stdout


def test_fix_is_idempotent_and_install_is_idempotent():
    first = hook.fix_torchvision_ops()
    assert hook.fix_torchvision_ops() == first
    hook.install()
    hook.install()
    assert sum(f is hook._FINDER for f in sys.meta_path) <= 1
