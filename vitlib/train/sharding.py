"""Scale-out on JAX's own engine: a 1-D device mesh over every device, batches split over it,
parameters replicated (data parallel) or sharded FSDP-style.

Multi-host: call ``jax.distributed.initialize()`` (coordinator address, process count and id
from the environment or arguments) in every process before anything else touches JAX; the mesh
then spans all hosts' devices and each host feeds its own slice of the global batch
(``shard_batch`` builds the global array from per-host data).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _fsdp_spec(shape, n: int, min_size: int) -> P:
    """Shard the largest axis divisible by the mesh size; small leaves stay replicated."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = AXIS
            return P(*spec)
    return P()


def state_shardings(abstract_tree, mesh: Mesh, fsdp: bool = False, min_size: int = 2 ** 14):
    """A NamedSharding per leaf of ``abstract_tree`` (params, optimizer state, ...)."""
    n = mesh.devices.size

    def one(leaf):
        if not fsdp or not hasattr(leaf, "shape"):
            return replicated(mesh)
        return NamedSharding(mesh, _fsdp_spec(leaf.shape, n, min_size))
    return jax.tree_util.tree_map(one, abstract_tree)


def host_rows(batch_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch that this process's devices hold (one contiguous block:
    the mesh orders devices by process). With one process, every row."""
    if jax.process_count() == 1:
        return slice(0, batch_size)
    where = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    starts = sorted(index[0].start or 0 for index in where.values())
    stops = sorted(index[0].stop if index[0].stop is not None else batch_size
                   for index in where.values())
    if stops[-1] - starts[0] != sum(b - a for a, b in zip(starts, stops)):
        raise ValueError(f"the devices of process {jax.process_index()} do not hold one "
                         f"contiguous block of the batch; make_mesh() orders them so")
    return slice(starts[0], stops[-1])


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """Place a global host batch (every process holds the whole of it) on the mesh, split along
    the batch axis; each process contributes its own rows."""
    if jax.process_count() == 1:
        return jax.device_put(batch, batch_sharding(mesh))
    first = next(iter(jax.tree_util.tree_leaves(batch)))
    rows = host_rows(len(first), mesh)
    return shard_local_rows(jax.tree_util.tree_map(lambda x: x[rows], batch), mesh, len(first))


def shard_local_rows(batch: dict, mesh: Mesh, global_size: int) -> dict:
    """Place this process's rows (``host_rows``) of a global batch of ``global_size`` on the
    mesh: the input pipelines of several hosts each make only their own rows."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, x, (global_size, *x.shape[1:])), batch)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"batch_size: {batch_size} does not split over {n} devices; allowed: "
                         f"a multiple of {n}")
