"""What machine a figure was measured on: CPU model, cores, vector extensions.

Usage:
    from stages.lib.machine import cpu_description
    cpu_description()    # {"cpu_model": "AMD EPYC", "cpu_cores": 2, "cpu_vector_extensions": "avx2 avx512f ..."}

Speed differs by about 2x between the AVX2-only and the AVX-512 machines this
project runs on, so every timing is stored with this, and cached per-machine
decisions (the fine-tuning precision probe) are keyed by it.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")


def cpu_description() -> dict:
    model, flags = platform.processor() or "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        model = names[0] if names else model
        flag_lines = [line.split(":", 1)[1].split() for line in lines if line.startswith("flags")]
        flags = set(flag_lines[0]) if flag_lines else set()
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "machine": platform.machine(),
            "cpu_vector_extensions": " ".join(flag for flag in VECTOR_FLAGS if flag in flags)}


def machine_line(description: dict | None = None) -> str:
    """'AMD EPYC, 2 cores, avx2 fma avx512f': one line to quote beside a figure."""
    description = description or cpu_description()
    return (f"{description['cpu_model']}, {description['cpu_cores']} cores, "
            f"{description['cpu_vector_extensions'] or 'no AVX2'}")
