"""Source fixes that let MinkowskiEngine 0.5.4's CUDA backend compile with CUDA 12 and 13.

ME 0.5.4 (2021) was written against CUDA 10/11. Building it with CUDA 13.0, torch 2.11 and gcc 13
for an H100 failed in six places, fixed here (most are reported upstream, unfixed in the sdist:
NVIDIA/MinkowskiEngine issues 543, 596, 601, 614, 632, 638). Each fix is also valid on CUDA 11/12
(version-guarded or plain C++), but only the CUDA 13.0 build was compiled and run here.

- thrust no longer includes its algorithms transitively: files that call thrust::sort_by_key,
  thrust::device, ... need the headers named (CUDA >= 12);
- CCCL 3 (CUDA 13) removed thrust::unary_function, which one functor still derives from;
- CUDA 13 replaced cudaMemPrefetchAsync(ptr, n, device, stream) by a form taking a
  cudaMemLocation and flags;
- CCCL 3 (CUDA 13) moved thrust under include/cccl, which nvcc searches and g++ (ME's .cpp files
  include thrust too) does not, and CUB now includes the toolkit's nvtx3.hpp, whose namespace
  nvtx3 collides with the older copy ME vendors from cudf: CUB's NVTX ranges are turned off;
- with recent torch, ATen/cuda/CUDAUtils.h needs at::Tensor complete before it is included;
- CCCL 3's thrust::pair is cuda::std::pair, so libstdc++'s unqualified __to_address (in
  shared_ptr = unique_ptr&&) finds cuda::std's too by ADL and is ambiguous (upstream issue 596):
  the hash map's shared_ptr is made from the released pointer and its deleter instead.

Idempotent: a file already patched is left alone. Run by tools/setup.sh for CUDA builds only;
usage: python tools/minkowski_cuda_patches.py MINKOWSKI_SOURCE_DIR
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

MARK = "// ovseg3d: CUDA 12/13 compatibility"

THRUST_HEADERS = [
    "execution_policy.h", "count.h", "fill.h", "for_each.h", "functional.h", "pair.h", "reduce.h",
    "remove.h", "scan.h", "sequence.h", "sort.h", "transform.h", "tuple.h", "unique.h",
    "device_vector.h", "host_vector.h", "system_error.h", "iterator/constant_iterator.h",
    "iterator/counting_iterator.h", "iterator/zip_iterator.h",
]

PREFETCH_HELPER = """
// The pre-13 call with a device id; CUDA 13 takes a cudaMemLocation and flags.
inline cudaError_t ovseg3d_prefetch_async(const void *ptr, size_t count, int device,
                                          cudaStream_t stream) {
#if CUDART_VERSION >= 13000
  cudaMemLocation location{};
  location.type = cudaMemLocationTypeDevice;
  location.id = device;
  return cudaMemPrefetchAsync(ptr, count, location, 0, stream);
#else
  return cudaMemPrefetchAsync(ptr, count, device, stream);
#endif
}
"""


def _insert_before_first_include(text: str, block: str) -> str:
    match = re.search(r"^#include", text, flags=re.M)
    if match is None:
        raise SystemExit("minkowski_cuda_patches: no #include line to anchor on")
    return text[: match.start()] + block + text[match.start():]


def _insert_after_last_include(text: str, block: str) -> str:
    last = list(re.finditer(r"^#include[^\n]*\n", text, flags=re.M))[-1]
    return text[: last.end()] + block + text[last.end():]


def _cuda_sources(src: Path) -> list[Path]:
    return sorted([*src.rglob("*.cu"), *src.rglob("*.cuh")])


def _rewrite(paths: list[Path], edit: Callable[[str], str]) -> list[Path]:
    """Apply a text edit to each file; the files it changed."""
    changed = []
    for path in paths:
        text = path.read_text()
        new = edit(text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def patch_thrust_includes(src: Path) -> list[Path]:
    """Name every thrust header ME relies on in each CUDA file that uses thrust."""
    block = MARK + "\n" + "".join(f"#include <thrust/{h}>\n" for h in THRUST_HEADERS)
    return _rewrite(_cuda_sources(src), lambda text: text if "thrust::" not in text or MARK in text
                    else _insert_before_first_include(text, block))


def patch_unary_function(src: Path) -> list[Path]:
    """Drop the thrust::unary_function base (a typedef holder, removed in CCCL 3)."""
    return _rewrite(sorted(src.rglob("*.cuh")),
                    lambda text: re.sub(r"\s*:\s*public\s+thrust::unary_function<[^{]*>\s*\{", " {", text))


def patch_prefetch(src: Path) -> list[Path]:
    """Route cudaMemPrefetchAsync through a helper that speaks both the old and the CUDA 13 form."""
    path = src / "3rdparty" / "concurrent_unordered_map.cuh"
    text = path.read_text()
    if "ovseg3d_prefetch_async" in text or "cudaMemPrefetchAsync(" not in text:
        return []
    text = text.replace("cudaMemPrefetchAsync(", "ovseg3d_prefetch_async(")
    path.write_text(_insert_after_last_include(text, PREFETCH_HELPER))
    return [path]


SETUP_FLAGS = """
# ovseg3d: CUDA 12/13 compatibility (see tools/minkowski_cuda_patches.py in ovseg3d)
NVCC_FLAGS += ["-DCCCL_DISABLE_NVTX"]
if not CPU_ONLY:
    from torch.utils.cpp_extension import CUDA_HOME as _TORCH_CUDA_HOME

    _CCCL = os.path.join(CUDA_HOME or _TORCH_CUDA_HOME or "/usr/local/cuda", "include", "cccl")
    if os.path.isdir(_CCCL):
        CC_FLAGS += ["-I" + _CCCL]
"""
NVCC_LINE = 'NVCC_FLAGS += ["--expt-relaxed-constexpr", "--expt-extended-lambda"]\n'


def patch_setup_flags(root: Path) -> list[Path]:
    """Compile flags: no CUB NVTX ranges; thrust's CCCL folder on g++'s include path."""
    path = root / "setup.py"
    text = path.read_text()
    if "ovseg3d: CUDA 12/13" in text:
        return []
    if NVCC_LINE not in text:
        raise SystemExit("minkowski_cuda_patches: setup.py has no NVCC_FLAGS line to anchor on (not the 0.5.4 sdist?)")
    path.write_text(text.replace(NVCC_LINE, NVCC_LINE + SETUP_FLAGS, 1))
    return [path]


def patch_tensor_before_cuda_utils(src: Path) -> list[Path]:
    """ATen/cuda/CUDAUtils.h uses at::Tensor without including it (torch >= 2.9)."""
    utils = "#include <ATen/cuda/CUDAUtils.h>"
    return _rewrite(_cuda_sources(src), lambda text: text if "#include <ATen/core/Tensor.h>" in text
                    else text.replace(utils, "#include <ATen/core/Tensor.h>\n" + utils))


SHARE_HELPER = """
#include <memory>
// ovseg3d: shared_ptr from a unique_ptr without libstdc++'s unique_ptr&& overload, whose unqualified
// __to_address is ambiguous with cuda::std's (ovseg3d tools/minkowski_cuda_patches.py).
template <typename T, typename D> std::shared_ptr<T> ovseg3d_share(std::unique_ptr<T, D> &&p) {
  D deleter = p.get_deleter();
  return std::shared_ptr<T>(p.release(), std::move(deleter));
}
"""


def patch_shared_map(src: Path) -> list[Path]:
    """The GPU coordinate map's hash table becomes shared without the ambiguous __to_address."""
    path = src / "coordinate_map_gpu.cuh"
    text = path.read_text()
    if "ovseg3d_share" in text:
        return []
    new, count = re.subn(r"m_map = map_type::create\(([^;]*)\);", r"m_map = ovseg3d_share(map_type::create(\1));", text)
    if count != 1:
        raise SystemExit("minkowski_cuda_patches: no 'm_map = map_type::create(...)' in coordinate_map_gpu.cuh")
    path.write_text(_insert_after_last_include(new, SHARE_HELPER))
    return [path]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not (Path(argv[1]) / "src" / "spmm.cu").is_file():
        print("usage: minkowski_cuda_patches.py MINKOWSKI_SOURCE_DIR (the unpacked 0.5.4 sdist)", file=sys.stderr)
        return 2
    root = Path(argv[1])
    src = root / "src"
    changed = (patch_thrust_includes(src) + patch_unary_function(src) + patch_prefetch(src)
               + patch_tensor_before_cuda_utils(src) + patch_shared_map(src) + patch_setup_flags(root))
    print(f"minkowski_cuda_patches: {len(changed)} file change(s) in {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
