"""The HDF5 dump: the only package that touches h5py.

Schema 2, one file per side, readable with plain h5py or ``h5ls -r``::

    /                     attrs: layerdiff_schema, layerdiff_version, framework, framework_version, dtype, seed,
                                 script, script_sha256, weights_sha256, inputs_sha256, upstream_sha256, loss, …
    /inputs/0, 1…         the inputs both sides received
    /targets              the targets, when the model has a loss
    /upstream/0, 1…       the seeded gradient on each output, when it has none
    /layers/0000_fc1      one group per layer call, in execution order; attrs name, kind, params
        output, input, grad_output, grad_input (and .1, .2… for more)   datasets; attrs norm, mean, and layout
                          (``"N H W C"``) where the axes are not in PyTorch's order
    /params/0000_fc1.W    attrs name, layer, layout; datasets value, grad

A tensor a stats-only dump (``--stats-only``, ``--skip-copied-weights``) does not keep is a dataset with its shape
and dtype but no storage, and attrs stored=0, sha256, sketch and finite (``records.statistics``); schema 1 is
schema 2 with every tensor stored, and is read as well.

An uncompressed tensor is a contiguous dataset whose space is allocated when it is made (no fill value written):
the writer puts its bytes at that offset from a thread of its own while HDF5 makes the next objects, so that a dump
is written at the speed of the disk; to h5py it is an ordinary dataset. A compressed one is chunked, as HDF5 writes it.

Data only: no pickled objects, so opening a dump never runs code. A dump is written to a temporary file beside
its destination and renamed when whole; an existing dump is only replaced when asked.

A dump is data from someone else, and ``Dump`` reads nothing of it unchecked. Opening one walks every link and
reads every attribute first: a link that leaves the file (external, soft or user-defined), a dataset whose values
live in another file (external storage, virtual datasets), a filter layerdiff never writes (HDF5 would load a
plugin for it), a dataset that claims more values than its storage can hold, and anything out of the schema are
refused on one line, naming where, before any value is read. Values are read one dataset at a time through one
method, where whatever HDF5 raises for damaged data is said as such; inputs, upstream gradient and weights are
checked against the hashes the dump records when they are read to run a model on.

Three modules, one job each: ``writer`` writes a dump (``write``, ``fill`` for a stats-only dump's second
pass, ``update_info`` for what is known only after it is written); ``walk`` opens one and checks every link and attribute before a value is read, and reads each value through
one method; ``reader`` is ``Dump``, the ``Recording`` the rest of layerdiff reads, on a walk.
"""

from layerdiff.errors import DumpError
from layerdiff.store.reader import READS, Dump
from layerdiff.store.walk import is_dump
from layerdiff.store.writer import COMPRESSIONS, SCHEMA, check_compression, fill, update_info, write

__all__ = ["COMPRESSIONS", "READS", "SCHEMA", "Dump", "DumpError", "check_compression", "fill", "is_dump", "update_info", "write"]
