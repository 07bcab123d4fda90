"""A dump is data from someone else. One crafted to read outside itself (external storage, external or soft links,
virtual datasets, a filter plugin), to make layerdiff allocate more than its data holds, or damaged in any way, is
refused on one line with exit 2, naming what is wrong and where, before any value is read; one whose data no longer
hashes to what it records is refused when that data would feed a model."""

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from layerdiff.cli import main

import damage
from conftest import one_error_line, write
from test_bad_input import GOOD

READERS = (("show", "{x}"), ("compare", "{x}", "{p}"), ("compare", "{p}", "{x}"), ("inspect", "{x}"))


@pytest.fixture
def dump(cli, tmp_path):
    """good.py and its dump good.h5, in the test's folder."""
    write(tmp_path, "good.py", GOOD)
    assert cli("dump", "good.py", "-o", "good.h5")[0] == 0
    return tmp_path / "good.h5"


def crafted(path: Path, name: str, make) -> Path:
    """A copy of the dump at ``path`` whose object ``name`` is replaced by what ``make(file, name)`` puts there."""
    out = path.with_name(f"crafted-{name.strip('/').replace('/', '-')}.h5")
    shutil.copy(path, out)
    with h5py.File(out, "a") as f:
        attrs = dict(f[name].attrs)
        del f[name]
        make(f, name)
        if name in f and not isinstance(f.get(name, getlink=True), (h5py.ExternalLink, h5py.SoftLink)):
            f[name].attrs.update(attrs)
    return out


def readers_in_a_subprocess(paths: dict[str, Path], timeout: float = 120) -> list[tuple[int, str]]:
    """Every reader on ``paths["x"]``, in one fresh process with a time limit: a reader that opened a FIFO would
    block there, and the time limit would say so."""
    commands = [[a.format(x=paths["x"], p=paths["p"]) for a in r] for r in READERS]
    script = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom layerdiff.cli import main\n"
        "out = []\nfor args in json.loads(sys.argv[1]):\n"
        "    r = CliRunner().invoke(main, args)\n    out.append((r.exit_code, r.stderr))\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_an_external_link_is_refused_without_opening_its_target(dump, tmp_path):
    target = tmp_path / "secret.h5"
    os.mkfifo(target)  # opening it to read blocks until someone writes: a reader following the link hangs
    x = crafted(dump, "/layers/0000_0/output", lambda f, n: f.__setitem__(n, h5py.ExternalLink(str(target), "/data")))
    for code, err in readers_in_a_subprocess({"x": x, "p": dump}):
        assert code == 2, err
        assert f"is refused: /layers/0000_0/output is an external link to '{target}':'/data'" in one_error_line(err)
        assert "reads nothing outside it" in err


@pytest.mark.parametrize("where", ["/layers/0000_0/output", "/params/0000_0.W/value", "/inputs/0"])
def test_external_storage_is_refused_without_opening_it(dump, tmp_path, where):
    target = tmp_path / "passwd"
    os.mkfifo(target)
    x = crafted(dump, where, lambda f, n: f.create_dataset(n, shape=(2, 4), dtype="f8", external=[(str(target), 0, h5py.h5f.UNLIMITED)]))
    for code, err in readers_in_a_subprocess({"x": x, "p": dump}):
        assert code == 2, err
        assert f"is refused: {where} keeps its values in another file ('{target}')" in one_error_line(err)


def test_a_virtual_dataset_is_refused_without_opening_its_sources(dump, tmp_path):
    target = tmp_path / "source.h5"
    os.mkfifo(target)

    def make(f, name):
        layout = h5py.VirtualLayout(shape=(2, 3), dtype="f8")
        layout[:] = h5py.VirtualSource(str(target), "x", shape=(2, 3))
        f.create_virtual_dataset(name, layout)

    x = crafted(dump, "/layers/0000_0/output", make)
    for code, err in readers_in_a_subprocess({"x": x, "p": dump}):
        assert code == 2, err
        assert "/layers/0000_0/output is a virtual dataset, whose values come from other files" in one_error_line(err)


@pytest.mark.parametrize("to", ["/inputs/0", "/nowhere", "/layers"])
def test_a_soft_link_is_refused(cli, dump, to):
    x = crafted(dump, "/layers/0000_0/output", lambda f, n: f.__setitem__(n, h5py.SoftLink(to)))
    code, _, err = cli("show", x)
    assert code == 2 and f"is refused: /layers/0000_0/output is a soft link to '{to}'" in one_error_line(err)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_shape_larger_than_its_storage_is_refused_before_anything_is_allocated(cli, dump, compression):
    def make(f, name):  # one chunk written: HDF5 would hand out zeros for the rest, 8 TB of them
        f.create_dataset(name, shape=(10**6, 10**6), dtype="f8", chunks=(1, 1024), compression=compression)[0, :1024] = 1.0

    x = crafted(dump, "/layers/0000_0/output", make)
    for reader in ("show", "inspect"):
        code, _, err = cli(reader, x)
        assert code == 2
        assert "is refused: /layers/0000_0/output declares shape (1000000, 1000000) (8000.0 GB) but stores" in one_error_line(err)


def test_a_filter_layerdiff_never_writes_is_refused(cli, dump):
    def make(f, name):  # an optional filter 307: HDF5 would look for a plugin library to decode it
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((2, 3))
        dcpl.set_filter(307, h5py.h5z.FLAG_OPTIONAL)
        h5py.Dataset(h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_DOUBLE, h5py.h5s.create_simple((2, 3)), dcpl=dcpl))[...] = 1.0

    code, _, err = cli("show", crafted(dump, "/layers/0000_0/output", make))
    assert code == 2 and "is encoded with HDF5 filter 307, which layerdiff never writes" in one_error_line(err)


def test_a_group_holding_itself_is_refused(cli, dump):
    x = dump.with_name("loop.h5")
    shutil.copy(dump, x)
    with h5py.File(x, "a") as f:
        f["layers/0000_0/loop"] = f["layers/0000_0"]
    code, _, err = cli("show", x)
    assert code == 2 and "damaged layerdiff dump: /layers/0000_0/loop links back to an object already read" in one_error_line(err)


def test_a_name_that_would_print_a_second_line_is_refused(cli, dump):
    with h5py.File(dump, "a") as f:
        f["layers/0000_0"].attrs["name"] = "fc1\nerror: all fine"
    code, _, err = cli("show", dump)
    assert code == 2 and "attribute 'name' holds unprintable text 'fc1\\nerror: all fine'" in one_error_line(err)


@pytest.mark.parametrize("where, says", [
    ("/inputs/0", "its inputs do not hash to the inputs_sha256 it records"),
    ("/params/0000_0.W/value", "its parameter values do not hash to the weights_sha256 it records"),
    ("/upstream/0", "its upstream gradients do not hash to the upstream_sha256 it records"),
])
def test_data_that_does_not_hash_to_what_the_dump_records_is_refused(cli, dump, where, says):
    with h5py.File(dump, "a") as f:
        f[where][0, 0] += 1.0
    for args in (("compare", "good.h5", "good.py"), ("compare", "good.py", "good.h5"), ("dump", "good.py", "-o", "b.h5", "--weights-from", "good.h5")):
        code, _, err = cli(*args)
        assert code == 2 and says in one_error_line(err)


def test_non_finite_inputs_in_a_dump_are_refused_even_with_a_matching_hash(cli, dump):
    from layerdiff.stats import digest

    with h5py.File(dump, "a") as f:
        f["inputs/0"][0, 0] = np.nan
        f.attrs["inputs_sha256"] = digest([f["inputs/0"][()]])
    code, _, err = cli("compare", "good.h5", "good.py")
    assert code == 2 and "/inputs/0 holds NaN or infinite inputs" in one_error_line(err)


def test_a_damaged_value_is_named_with_its_place(cli, tmp_path):
    write(tmp_path, "good.py", GOOD)
    assert cli("dump", "good.py", "-o", "z.h5", "--compression", "gzip")[0] == 0
    with h5py.File(tmp_path / "z.h5") as f:
        offset, size = f["layers/0000_0/output"].id.get_chunk_info(0).byte_offset, f["layers/0000_0/output"].id.get_chunk_info(0).size
    data = bytearray((tmp_path / "z.h5").read_bytes())
    data[offset : offset + size] = bytes(size)  # the compressed chunk, zeroed: deflate cannot decode it
    (tmp_path / "z.h5").write_bytes(bytes(data))
    code, _, err = cli("inspect", "z.h5")
    assert code == 2 and "z.h5 is a damaged layerdiff dump: /layers/0000_0/output cannot be read (" in one_error_line(err)


def _outcome(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.stderr


# The inputs are seeds: shrinking them finds nothing smaller, only takes minutes. A failure prints its seeds.
# LAYERDIFF_FUZZ_EXAMPLES=2000 for a longer search than the suite's.
@settings(max_examples=int(os.environ.get("LAYERDIFF_FUZZ_EXAMPLES", 50)), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow],
          phases=(Phase.explicit, Phase.generate))
@given(seed=st.integers(0, 2**32 - 1), hows=st.lists(st.sampled_from(damage.DAMAGES), min_size=1, max_size=2),
       detail=st.integers(0, 2**32 - 1))
def test_every_reader_exits_0_1_or_2_with_one_line_whatever_the_damage(seed, hows, detail):
    folder = Path(tempfile.mkdtemp())
    try:
        pristine, x = folder / "p.h5", folder / "x.h5"
        damage.write_random_dump(pristine, seed)
        for args in (["show", pristine], ["compare", pristine, pristine]):  # a valid dump reads
            code, err = _outcome([str(a) for a in args])
            assert code == 0 and not err, err
        shutil.copy(pristine, x)
        pick, done = random.Random(detail), []
        for how in hows:
            try:
                done.append(f"{how.__name__}: {how(x, pick)}")
            except Exception:  # an earlier damage left no HDF5 file that h5py can change: enough damage
                break
        for reader in READERS:
            args = [a.format(x=x, p=pristine) for a in reader]
            code, err = _outcome(args)
            lines = err.splitlines()
            assert code in (0, 1, 2), (done, args, err)
            if code == 2:
                assert len(lines) == 1 and lines[0].startswith("error: "), (done, args, err)
            else:
                assert not err, (done, args, err)
    finally:
        shutil.rmtree(folder)
