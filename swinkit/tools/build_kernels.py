"""Build swinkit's compiled CPU kernels ahead of first use: ``python -m swinkit.tools.build_kernels``."""
from __future__ import annotations

from swinkit.layers import native


def main() -> int:
    if not native.enabled():
        print("swinkit's CPU kernels are off here (SWINKIT_NATIVE=0, or no AVX2 on this CPU)")
        return 1
    if not native.available():
        return 1
    print(f"swinkit CPU kernels ready in {native.cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
