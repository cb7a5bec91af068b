"""A plain description of the machine: what the runtime's decisions are made from."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    """One GPU: its name and CUDA compute capability (7.5 for a T4, 8.0 an A100, 9.0 an H100)."""

    name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class Hardware:
    """What a process can run on. `cpu_flags` are /proc/cpuinfo's (only the ones that matter
    here are kept); `tpu_cores` counts TPU devices; `workers` is the machines of a multi-worker
    cluster (TF_CONFIG), this one included."""

    cores: int = 1
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    gpus: tuple[Gpu, ...] = ()
    tpu_cores: int = 0
    workers: int = 1
    cpu_devices: int = 1  # devices JAX shows on the CPU (XLA_FLAGS=--xla_force_host_platform_device_count=N)

    @property
    def cpu_bf16(self) -> bool:
        """AVX512_BF16 or AMX: bfloat16 matmuls at about twice float32's rate or more."""
        return bool({"avx512_bf16", "amx_bf16"} & self.cpu_flags)

    @property
    def cpu_amx(self) -> bool:
        return "amx_bf16" in self.cpu_flags

    @property
    def min_compute_capability(self) -> tuple[int, int] | None:
        """The weakest GPU's: what every replica can do."""
        return min(g.compute_capability for g in self.gpus) if self.gpus else None

    @classmethod
    def cpu(cls, cores: int = 2, bf16: bool = False, amx: bool = False) -> Hardware:
        """A CPU-only machine, e.g. `Hardware.cpu(2, bf16=True, amx=True)` for a Sapphire Rapids VM."""
        flags = ({"avx512_bf16"} if bf16 or amx else set()) | ({"amx_bf16", "amx_tile"} if amx else set())
        return cls(cores=cores, cpu_flags=frozenset(flags))

    @classmethod
    def with_gpus(cls, count: int, name: str, compute_capability: tuple[int, int], cores: int = 8) -> Hardware:
        """`count` identical GPUs, e.g. `Hardware.with_gpus(2, "Tesla T4", (7, 5))` for Kaggle's default."""
        return cls(cores=cores, gpus=tuple(Gpu(name, compute_capability) for _ in range(count)))

    def summary(self) -> str:
        """One line a user reads: `2 x Tesla T4 (compute capability 7.5)`, `CPU, 2 cores, AMX`."""
        if self.tpu_cores:
            return f"TPU, {self.tpu_cores} cores"
        if self.gpus:
            names = sorted({g.name for g in self.gpus})
            cc = self.min_compute_capability
            return f"{len(self.gpus)} x {', '.join(names)} (compute capability {cc[0]}.{cc[1]})"
        units = "AMX" if self.cpu_amx else "AVX512_BF16" if self.cpu_bf16 else "no bf16 units"
        devices = f", {self.cpu_devices} devices" if self.cpu_devices > 1 else ""
        return f"CPU, {self.cores} cores, {units}{devices}"
