"""Valid dumps made at random, and the ways a dump gets damaged (or crafted): for the property test of the readers.

``random_trace`` builds a trace the way a capture leaves it (layers with their tensors, parameters with gradients,
inputs, the hashes of weights, inputs and upstream gradient), from a seed; ``DAMAGES`` each change a written dump
in one way, drawing what to change from a ``random.Random``.
"""

import random

import h5py
import numpy as np

from layerdiff import store
from layerdiff.stats import digest, fingerprint
from layerdiff.records import LayerRecord, ParamRecord, RunInfo, Trace


def random_trace(seed: int) -> tuple[Trace, dict]:
    """A random trace and how to write it (``store.write``'s keywords)."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    dtype = pick.choice([np.float64, np.float32])
    batch, width = pick.randint(1, 4), pick.randint(1, 6)
    layers, params = [], []
    x = rng.standard_normal((batch, width)).astype(dtype)
    inputs = [x]
    for i in range(pick.randint(1, 5)):
        name = pick.choice(["fc", "relu", "sig", "tanh", "conv", "blocks.0.attn", "x"]) + str(i)
        out_width = pick.randint(1, 6)
        y = rng.standard_normal((batch, out_width)).astype(dtype)
        tensors = {"input": x, "output": y, "grad_output": rng.standard_normal(y.shape).astype(dtype),
                   "grad_input": rng.standard_normal(x.shape).astype(dtype)}
        if pick.random() < 0.2:
            tensors["input.1"] = rng.standard_normal(x.shape).astype(dtype)
        names = []
        if pick.random() < 0.6:
            for pname, shape, layout in ((f"{name}.W", (x.shape[1], out_width), "in out"), (f"{name}.b", (out_width,), "")):
                params.append(ParamRecord(pname, name, layout, rng.standard_normal(shape).astype(dtype),
                                          rng.standard_normal(shape).astype(dtype)))
                names.append(pname)
        layers.append(LayerRecord(name, pick.choice(["Dense", "ReLU", "Sigmoid", "Tanh", "Block"]), tensors, names))
        x = y
    with_loss = pick.random() < 0.5
    targets = rng.integers(0, 3, batch) if with_loss else None
    upstream = [] if with_loss else [rng.standard_normal(x.shape).astype(dtype)]
    info = RunInfo(
        framework="numpy", framework_version=np.__version__, layerdiff_version="0.1.0", python="3",
        dtype="float64", compute_dtype=np.dtype(dtype).name, seed=pick.randint(0, 9), script="random.py",
        weights_sha256=fingerprint((p.value, p.layout) for p in params), inputs_sha256=digest(inputs),
        run_to_run=pick.choice([0.0, None]),
        upstream_sha256="loss:" + digest([targets]) if with_loss else "random:" + digest(upstream),
    )
    trace = Trace(layers, params, float(rng.standard_normal()) if with_loss else None, info, inputs, targets, upstream)
    options = {"compression": pick.choice([None, None, "gzip", "lzf"])}
    if pick.random() < 0.2:  # stats-only: every tensor as its statistics, some layers' values too
        kept = {layer.name for layer in layers if pick.random() < 0.5}
        options["full"] = kept.__contains__
    return trace, options


def _objects(f: h5py.File) -> list[str]:
    found = []
    f.visit(found.append)
    return found


def _datasets(f: h5py.File) -> list[str]:
    return [n for n in _objects(f) if isinstance(f[n], h5py.Dataset)]


def _with_attrs(f: h5py.File) -> list[tuple[str, str]]:
    return [(n, k) for n in ["/", *_objects(f)] for k in f[n].attrs]


def flip_bits(path, pick):
    data = bytearray(path.read_bytes())
    for _ in range(pick.randint(1, 8)):
        i = pick.randrange(len(data))
        data[i] ^= 1 << pick.randrange(8)
    path.write_bytes(bytes(data))
    return "bits flipped"


def zero_bytes(path, pick):
    data = bytearray(path.read_bytes())
    start = pick.randrange(len(data))
    length = pick.choice([1, 8, 64, 512, 4096])
    data[start : start + length] = bytes(len(data[start : start + length]))
    path.write_bytes(bytes(data))
    return f"{length} bytes zeroed at {start}"


def truncate(path, pick):
    data = path.read_bytes()
    n = pick.randrange(len(data))
    path.write_bytes(data[:n])
    return f"truncated to {n}"


def delete_object(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_objects(f))
        del f[name]
    return f"deleted {name}"


def delete_attribute(path, pick):
    with h5py.File(path, "a") as f:
        name, key = pick.choice(_with_attrs(f))
        del f[name].attrs[key]
    return f"deleted {name} attr {key}"


ODD_VALUES = ["text", "", 3.5, -1, 2**40, np.nan, np.inf, np.arange(3.0), np.zeros((2, 2)), b"\xff\xfe", "{not json",
              "[1, 2", '["a", 1]', "fc1\nerror: fake line", np.array([b"a", b"b"]), True, 0, 1e308]


def retype_attribute(path, pick):
    with h5py.File(path, "a") as f:
        name, key = pick.choice(_with_attrs(f))
        value = pick.choice(ODD_VALUES)
        f[name].attrs[key] = value
    return f"{name} attr {key} = {value!r}"


def group_for_dataset(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_datasets(f))
        del f[name]
        f.create_group(name)
    return f"{name} replaced by a group"


def retype_dataset(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_datasets(f))
        old = f[name]
        attrs, shape = dict(old.attrs), old.shape
        del f[name]
        kind = pick.choice(["string", "shape", "scalar", "int", "compound", "empty"])
        if kind == "string":
            f[name] = np.array([b"abc"] * 3)
        elif kind == "shape":
            f[name] = np.zeros(tuple(d + 1 for d in shape) or (2,))
        elif kind == "scalar":
            f[name] = 1.0
        elif kind == "int":
            f[name] = np.zeros(shape, dtype=np.int8)
        elif kind == "compound":
            f[name] = np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])
        else:
            f.create_dataset(name, shape=(0,), dtype="f8")
        f[name].attrs.update(attrs)
    return f"{name} rewritten as {kind}"


def schema(path, pick):
    value = pick.choice([0, 1, 3, 99, -1, "2", "two", 2.5, np.nan, np.arange(2)])
    with h5py.File(path, "a") as f:
        f.attrs["layerdiff_schema"] = value
    return f"schema {value!r}"


def rename_member(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_objects(f))
        parent, _, leaf = name.rpartition("/")
        new = pick.choice(["x", "0000", "abc_def", "99999999999_x", "output.x", "grad", "input.01", "7"])
        target = f"{parent}/{new}" if parent else new
        if target in f:
            return "nothing renamed"
        f.move(name, target)
    return f"{name} -> {target}"


def values(path, pick):
    """Change some values of a dataset in place: the recorded hashes no longer match (where they are checked)."""
    with h5py.File(path, "a") as f:
        names = [n for n in _datasets(f) if f[n].size and f[n].attrs.get("stored", 1) and f[n].dtype.kind == "f"]
        if not names:
            return "no values"
        name = pick.choice(names)
        data = f[name][()]
        flat = data.reshape(-1)
        with np.errstate(over="ignore"):
            flat[pick.randrange(flat.size)] = pick.choice([np.nan, np.inf, 1e300, 0.0, 7.0])
        f[name][...] = data
    return f"changed a value of {name}"


def external_link(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_objects(f))
        del f[name]
        f[name] = h5py.ExternalLink("/etc/passwd", "/x")
    return f"{name} -> external link"


def soft_link(path, pick):
    with h5py.File(path, "a") as f:
        names = _objects(f)
        name, target = pick.choice(names), pick.choice(["/nowhere", "/", *names])
        del f[name]
        f[name] = h5py.SoftLink(target if target.startswith("/") else "/" + target)
    return f"{name} -> soft link {target}"


def external_storage(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_datasets(f))
        attrs = dict(f[name].attrs)
        del f[name]
        f.create_dataset(name, shape=(4,), dtype="f8", external=[("/etc/hostname", 0, h5py.h5f.UNLIMITED)])
        f[name].attrs.update(attrs)
    return f"{name} -> external storage"


def virtual(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_datasets(f))
        attrs = dict(f[name].attrs)
        del f[name]
        layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
        layout[:] = h5py.VirtualSource("/etc/other.h5", "x", shape=(4,))
        f.create_virtual_dataset(name, layout)
        f[name].attrs.update(attrs)
    return f"{name} -> virtual"


def absurd_shape(path, pick):
    with h5py.File(path, "a") as f:
        name = pick.choice(_datasets(f))
        attrs = dict(f[name].attrs)
        del f[name]
        shape = pick.choice([(10**6, 10**6), (2**40,), (10**5, 10**5, 10**5)])
        f.create_dataset(name, shape=shape, dtype="f8", chunks=True, compression=pick.choice([None, "gzip"]))
        f[name].attrs.update(attrs)
    return f"{name} shape {shape}"


def cycle(path, pick):
    with h5py.File(path, "a") as f:
        groups = [n for n in _objects(f) if isinstance(f[n], h5py.Group)]
        name = pick.choice(groups)
        f[f"{name}/loop"] = f[name]
    return f"{name}/loop -> {name}"


def extra_member(path, pick):
    with h5py.File(path, "a") as f:
        groups = ["/", *[n for n in _objects(f) if isinstance(f[n], h5py.Group)]]
        name = pick.choice(groups)
        f[name].create_dataset("extra" if name != "/" else "notes", data=np.arange(3))
    return f"{name} got an extra member"


DAMAGES = [flip_bits, zero_bytes, truncate, delete_object, delete_attribute, retype_attribute, group_for_dataset,
           retype_dataset, schema, rename_member, values, external_link, soft_link, external_storage, virtual,
           absurd_shape, cycle, extra_member]


def damage(path, pick: random.Random) -> str:
    """Damage the dump at ``path`` in one of the ways above; returns what was done."""
    how = pick.choice(DAMAGES)
    return f"{how.__name__}: {how(path, pick)}"


def write_random_dump(path, seed: int) -> Trace:
    trace, options = random_trace(seed)
    store.write(trace, path, **options)
    return trace

