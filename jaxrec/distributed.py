"""Multi-host runs: start JAX's multi-controller runtime from the config or the environment.

Every process runs the same program (same config, same data); after ``initialize``,
``jax.devices()`` lists the devices of all processes, ``jaxrec.train.sharding.make_mesh``
spans them, and ``fit`` with ``sharding = "feature"`` or ``"row"`` trains one model across
all of them (each process feeds the shards of the batches, parameters and graph that
live on its own devices). This is JAX's own distributed engine
(``jax.distributed.initialize``); jaxrec adds no other.

Where the values come from (first found wins): the arguments, the config
(``coordinator_address``, ``num_processes``, ``process_id``), the environment
(``JAXREC_COORDINATOR``, ``JAXREC_NUM_PROCESSES``, ``JAXREC_PROCESS_ID``), and finally
JAX's own cluster auto-detection (SLURM, Open MPI, ...) when ``num_processes`` is unset
everywhere but a coordinator is. On CPU, the cross-process collectives use gloo.

Call it once per process before anything else touches JAX (before any array is created).
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxrec.config import Config, ConfigError

ENV_COORDINATOR = "JAXREC_COORDINATOR"
ENV_NUM_PROCESSES = "JAXREC_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXREC_PROCESS_ID"
ENV_LOCAL_DEVICES = "JAXREC_LOCAL_DEVICES"

__all__ = ["initialize", "resolve", "is_initialized", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID"]

_STATE: dict[str, Any] = {"initialized": False}


def resolve(
    config: Config | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[str | None, int, int]:
    """``(coordinator_address, num_processes, process_id)`` from arguments, config, environment."""
    env = os.environ if env is None else env

    def pick(arg, cfg_value, cfg_default, env_name, cast):
        if arg is not None:
            return arg
        if config is not None and cfg_value != cfg_default:
            return cfg_value
        if env.get(env_name):
            try:
                return cast(env[env_name])
            except ValueError:
                raise ConfigError(f"${env_name}={env[env_name]!r}: expected {cast.__name__}") from None
        return cfg_default

    addr = pick(coordinator_address, getattr(config, "coordinator_address", None), None, ENV_COORDINATOR, str)
    nproc = pick(num_processes, getattr(config, "num_processes", 1), 1, ENV_NUM_PROCESSES, int)
    pid = pick(process_id, getattr(config, "process_id", 0), 0, ENV_PROCESS_ID, int)
    if nproc < 1:
        raise ConfigError(f"num_processes={nproc}: expected an integer >= 1")
    if not 0 <= pid < nproc:
        raise ConfigError(f"process_id={pid}: expected an integer in [0, num_processes={nproc})")
    if nproc > 1 and not addr:
        raise ConfigError(
            f"num_processes={nproc} but no coordinator_address (config key, or ${ENV_COORDINATOR}=host:port)"
        )
    if addr is not None and (":" not in addr or not addr.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"coordinator_address={addr!r}: expected host:port")
    return addr, int(nproc), int(pid)


def initialize(
    config: Config | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_count: int | None = None,
    timeout_s: int = 300,
) -> bool:
    """Join the multi-process run; returns True if one was started (False: single process).

    ``local_device_count`` (or ``$JAXREC_LOCAL_DEVICES``) sets how many CPU devices this
    process exposes (``jax_num_cpu_devices``), for CPU-only clusters and tests.
    """
    if _STATE["initialized"]:
        return True
    addr, nproc, pid = resolve(config, coordinator_address, num_processes, process_id)
    if local_device_count is None and os.environ.get(ENV_LOCAL_DEVICES):
        local_device_count = int(os.environ[ENV_LOCAL_DEVICES])
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    if nproc == 1:
        return False
    # Cross-process collectives on CPU need an implementation (GPU/TPU bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=addr, num_processes=nproc, process_id=pid, initialization_timeout=timeout_s
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"jaxrec.distributed.initialize: process {pid}/{nproc} could not join {addr}: {e} "
            "(call it before any JAX computation, once per process)"
        ) from e
    _STATE["initialized"] = True
    return True


def is_initialized() -> bool:
    return bool(_STATE["initialized"])
